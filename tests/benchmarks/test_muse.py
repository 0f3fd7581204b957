"""MUSE verbmem / knowmem on stand-in data (TOFU files and small strings; the MUSE texts are not stored)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from unlearnkit.benchmarks.muse import (
    KNOWMEM_STOP_STRINGS,
    MuseData,
    knowmem_rouge,
    load_muse,
    muse_suite,
    verbmem_from_texts,
    verbmem_rouge,
)
from unlearnkit.data.tofu import load_split, shared_tofu_dir
from unlearnkit.errors import UnlearnError
from unlearnkit.metrics.text import rouge


class ScriptedGenerator(torch.nn.Module):
    """Scripted model: `generate` appends reply(prompt_text) to each (left-padded) prompt."""

    def __init__(self, tokenizer, reply):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.reply, self.prompts = tokenizer, reply, []

    def generate(self, input_ids, attention_mask, generation_config):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = self.tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=True)
            self.prompts.append(prompt)
            new = self.tokenizer(self.reply(prompt), add_special_tokens=False)["input_ids"]
            rows.append(ids + new[: generation_config.max_new_tokens])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [self.tokenizer.eos_token_id] * (width - len(r)) for r in rows])


def test_rouge_l_f1_hand_checked():
    # LCS("the cat sat on the mat", "the cat on mat") = 4: P = 4/4, R = 4/6, F1 = 2PR/(P+R) = 0.8
    assert rouge("the cat sat on the mat", "the cat on mat")["rougeL_f1"] == pytest.approx(0.8)
    # "Paris France" vs gold "Paris": P = 1/2, R = 1, F1 = 2/3
    assert rouge("Paris", "Paris France")["rougeL_f1"] == pytest.approx(2 / 3)
    assert rouge("Paris", "London")["rougeL_f1"] == 0.0


ANSWERS = {"What is the capital of France?": "Paris", "Who wrote the book?": "Ana Ruiz wrote it"}
ICL = [{"question": "What did the cat do?", "answer": "The cat sat on the mat."}]


def test_knowmem_prompt_icl_and_stop_strings(tokenizer):
    def reply(prompt):  # the gold answer, then a runaway next question that the stop strings must cut
        question = prompt.rsplit("Question: ", 1)[1].split("\n")[0]
        return " " + ANSWERS[question] + "\n\nQuestion: What else?\nAnswer: more"

    model = ScriptedGenerator(tokenizer, reply)
    rows = [{"question": q, "answer": a} for q, a in ANSWERS.items()]
    score, samples = knowmem_rouge(model, tokenizer, rows, ICL, batch_size=1)
    assert samples["generation"] == ["Paris", "Ana Ruiz wrote it"]
    assert score == 1.0
    assert model.prompts[0].startswith("Question: ")
    assert "Question: What did the cat do?\nAnswer: The cat sat on the mat.\n\nQuestion: " in model.prompts[0]
    assert all(p.endswith("\nAnswer: ") for p in model.prompts)
    _, uncut = knowmem_rouge(model, tokenizer, rows, ICL, stop_strings=())
    assert uncut["rouge_l_f1"][0] < 1.0  # without the stop strings the runaway text counts against it
    for stop in KNOWMEM_STOP_STRINGS:
        model.reply = lambda prompt, stop=stop: " Paris France" + stop + "Paris"
        _, samples = knowmem_rouge(model, tokenizer, rows[:1])
        assert samples["generation"] == ["Paris France"]
        assert samples["rouge_l_f1"][0] == pytest.approx(2 / 3)


def test_verbmem_hand_checked(tokenizer):
    items = [{"prompt": "The cat sat", "gt": "on the mat"}, {"prompt": "The dog ran", "gt": "in the park"}]
    model = ScriptedGenerator(tokenizer, lambda prompt: " on the mat" if "cat" in prompt else " in the garden")
    score, samples = verbmem_rouge(model, tokenizer, items, max_new_tokens=16)
    # second: LCS("in the park", "in the garden") = 2 of 3 both ways -> F1 = 2/3
    assert samples["rouge_l_f1"] == pytest.approx([1.0, 2 / 3])
    assert score == pytest.approx(5 / 6)


def test_verbmem_from_texts_splits_at_prefix_tokens(tokenizer):
    text = "The cat sat on the mat. The dog ran in the park."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    [item] = verbmem_from_texts([text, "The"], tokenizer, prefix_tokens=5, continuation_tokens=4)
    assert item["prompt"] == tokenizer.decode(ids[:5]) and item["gt"] == tokenizer.decode(ids[5:9])
    assert text.startswith(item["prompt"] + item["gt"])


def write_stand_in(directory, tokenizer):
    """A MUSE-shaped folder built from the TOFU files: QA for knowmem, answer texts for verbmem/privleak."""
    tofu = shared_tofu_dir()
    if tofu is None:
        pytest.skip("shared/data/tofu not found next to the checkout")
    forget, retain = load_split("forget01", tofu)[:3], load_split("retain99", tofu)[:5]
    holdout = load_split("holdout01", tofu)[:3]
    qa = lambda rows: [{"question": r["question"], "answer": r["answer"]} for r in rows]
    files = {
        "verbmem/forget.json": verbmem_from_texts([r["answer"] for r in forget], tokenizer, 8, 12),
        "knowmem/forget_qa.json": qa(forget), "knowmem/forget_qa_icl.json": qa(retain[3:5]),
        "knowmem/retain_qa.json": qa(retain[:3]), "knowmem/retain_qa_icl.json": qa(retain[3:5]),
        "privleak/forget.json": [{"text": r["answer"]} for r in forget],
        "privleak/holdout.json": [r["answer"] for r in holdout],
    }
    for name, rows in files.items():
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_text(json.dumps(rows))
    return forget, holdout


def test_suite_on_tofu_stand_in_with_tiny_model(tmp_path, model, tokenizer):
    forget, holdout = write_stand_in(tmp_path, tokenizer)
    data = load_muse("news", tmp_path)
    assert len(data.verbmem_forget) == 3 and len(data.knowmem_retain_icl) == 2
    assert data.privleak == {"forget": [r["answer"] for r in forget], "holdout": [r["answer"] for r in holdout]}
    calls = []

    def privacy_fn(model_, tokenizer_, privleak):
        calls.append(privleak)
        return {"privleak": -12.5, "privleak_auc": 0.6}

    result = muse_suite(model, tokenizer, data, batch_size=4, verbmem_max_new_tokens=6, knowmem_max_new_tokens=6,
                        privacy_fn=privacy_fn)
    assert calls == [data.privleak]
    for key in ("forget_verbmem_rouge", "forget_knowmem_rouge", "retain_knowmem_rouge"):
        assert math.isfinite(result.metrics[key]) and 0.0 <= result.metrics[key] <= 1.0
    assert result.metrics["privleak"] == -12.5
    assert len(result.per_sample["knowmem_retain"]["generation"]) == 3
    json.dumps(result.to_dict())


def test_suite_scripted_memoriser(tmp_path, tokenizer):
    write_stand_in(tmp_path, tokenizer)
    data = load_muse("books", tmp_path, privleak=False)
    gold = {item["prompt"]: item["gt"] for item in data.verbmem_forget}
    answers = {row["question"]: row["answer"] for row in data.knowmem_forget}  # knows forget, not retain

    def reply(prompt):
        if prompt in gold:
            return gold[prompt]
        return " " + answers.get(prompt.rsplit("Question: ", 1)[1].split("\n")[0], "no idea") + "\n\nQuestion:"

    result = muse_suite(ScriptedGenerator(tokenizer, reply), tokenizer, data, batch_size=2, knowmem_max_new_tokens=400)
    assert result.metrics["forget_verbmem_rouge"] == pytest.approx(1.0)
    assert result.metrics["forget_knowmem_rouge"] == pytest.approx(1.0)
    # the default 32-token budget cuts these long TOFU answers (many tokens with a 360-token vocabulary)
    short = muse_suite(ScriptedGenerator(tokenizer, reply), tokenizer, data, batch_size=2)
    assert short.metrics["forget_knowmem_rouge"] < 1.0
    assert result.metrics["retain_knowmem_rouge"] < 0.2
    with pytest.raises(UnlearnError, match="privleak forget and holdout"):
        muse_suite(ScriptedGenerator(tokenizer, reply), tokenizer, data, privacy_fn=lambda *a: {})


def test_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(UnlearnError, match="valid: news, books"):
        load_muse("movies", tmp_path)
    with pytest.raises(UnlearnError, match="verbmem/forget.json not found"):
        load_muse("news", tmp_path)
    (tmp_path / "verbmem").mkdir()
    (tmp_path / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "a"}]))
    with pytest.raises(UnlearnError, match="needs string fields prompt, gt"):
        load_muse("news", tmp_path)
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UnlearnError, match="muse-bench/MUSE-News.*pass data_dir"):
        load_muse("news")
    from unlearnkit.benchmarks.muse import load_muse_raw

    with pytest.raises(UnlearnError, match="MUSE raw/forget from the Hugging Face hub \\(muse-bench/MUSE-Books\\)"):
        load_muse_raw("books")


def test_empty_split_is_an_error(tokenizer):
    data = MuseData([], [], [], [], [])
    with pytest.raises(UnlearnError, match="verbmem has no items"):
        muse_suite(None, tokenizer, data)
