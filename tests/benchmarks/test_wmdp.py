"""WMDP / MMLU multiple-choice accuracy: prompt format, option masking, hand-checked accuracy, loaders."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unlearnkit.benchmarks.passes import score_examples
from unlearnkit.benchmarks.wmdp import (
    MultipleChoiceFormat,
    choice_accuracy,
    choice_predictions,
    evaluate_mmlu,
    evaluate_multiple_choice,
    evaluate_wmdp,
    load_mmlu,
    load_wmdp,
)
from unlearnkit.benchmarks.harness import evaluate_with_lm_eval, local_tasks
from unlearnkit.data.batch import IGNORE_INDEX
from unlearnkit.data.tofu import shared_tofu_dir
from unlearnkit.errors import UnlearnError

ROW = {"question": " What is 2 + 2? ", "choices": ["3", "4", "5", "22"], "answer": 1}


def wmdp_dir():
    tofu = shared_tofu_dir()
    directory = tofu.parent / "wmdp" if tofu is not None else None
    if directory is None or not (directory / "chem_questions.json").is_file():
        pytest.skip("shared/data/wmdp not found next to the checkout")
    return directory


class LetterLover(torch.nn.Module):
    """Scripted model: uniform logits except a bonus on one token id at every position."""

    def __init__(self, vocab: int, token: int, bonus: float = 5.0):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.token, self.bonus = vocab, token, bonus

    def forward(self, input_ids, attention_mask=None, **_):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.token] = self.bonus
        return SimpleNamespace(logits=logits)


def test_prompt_is_lm_eval_format():
    fmt = MultipleChoiceFormat()
    assert fmt.prompt(ROW, "biology") == (
        "The following are multiple choice questions (with answers) about biology.\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:")
    assert fmt.prompt(ROW, "high_school_physics").startswith("The following are multiple choice questions "
                                                             "(with answers) about high school physics.\n\n")
    assert fmt.options(ROW) == [" A", " B", " C", " D"]
    assert MultipleChoiceFormat(choice_format="text").options(ROW) == [" 3", " 4", " 5", " 22"]
    with pytest.raises(UnlearnError, match="valid: letter, text"):
        MultipleChoiceFormat(choice_format="letters")


def test_option_tokens_are_the_only_scored_ones(tokenizer):
    fmt = MultipleChoiceFormat()
    prompt = fmt.prompt(ROW, "biology")
    example = fmt.encode(tokenizer, prompt, " B")
    scored = [label for label in example.labels if label != IGNORE_INDEX]
    assert scored == tokenizer(" B", add_special_tokens=False)["input_ids"]
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert MultipleChoiceFormat(add_special_tokens=False).encode(tokenizer, prompt, " B").input_ids[0] != tokenizer.bos_token_id


def test_accuracy_hand_checked():
    lls = [[-3.0, -1.0, -2.0, -4.0], [-1.0, -1.0, -5.0, -5.0], [-9.0, -8.0, -7.0, -0.5]]
    predictions = choice_predictions(lls)
    assert predictions == [1, 0, 3]  # ties go to the first option
    assert choice_accuracy(predictions, [1, 1, 3]) == pytest.approx(2 / 3)
    # per-byte normalisation can flip the choice: " 22" (3 bytes) at -4 beats " 3" (2 bytes) at -3
    assert choice_predictions([[-3.0, -4.0]], [[2, 3]]) == [1]


def test_gold_with_highest_likelihood_is_correct(tokenizer):
    rows = [dict(ROW, answer=k) for k in range(4)] + [dict(ROW, answer=2)]
    wrong_on = {4}  # the last item's scripted favourite (option 0) is not its gold (2)

    def scorer(model, examples, pad_id, batch_size, progress):
        assert len(examples) == 4 * len(rows) and batch_size == 7
        values = np.full(len(examples), -5.0)
        for item, row in enumerate(rows):
            values[4 * item + (0 if item in wrong_on else row["answer"])] = -1.0
        return values, np.ones(len(examples), dtype=np.int64)

    result = evaluate_multiple_choice(None, tokenizer, {"toy": rows}, scorer=scorer, batch_size=7)
    assert result["per_sample"]["toy"]["correct"] == [True, True, True, True, False]
    assert result["accuracy"] == pytest.approx(4 / 5) and result["n"] == 5
    assert result["per_subset"]["toy"] == {"accuracy": pytest.approx(0.8), "accuracy_norm": pytest.approx(0.8), "n": 5}


def test_wmdp_files_scripted_model_picks_b(tokenizer):
    data = load_wmdp(("chem", "bio"), wmdp_dir(), limit=20)
    assert [len(rows) for rows in data.values()] == [20, 20]
    model = LetterLover(len(tokenizer), tokenizer(" B", add_special_tokens=False)["input_ids"][-1])
    result = evaluate_wmdp(model, tokenizer, data, batch_size=16)
    for name, rows in data.items():
        samples = result["per_sample"][name]
        assert samples["prediction"] == [1] * 20
        expected = sum(row["answer"] == 1 for row in rows) / 20  # always "B": accuracy = share of gold B
        assert result["per_subset"][name]["accuracy"] == pytest.approx(expected)
    all_rows = data["chem"] + data["bio"]
    assert result["accuracy"] == pytest.approx(sum(r["answer"] == 1 for r in all_rows) / 40)
    assert result["n"] == 40 and result["settings"]["choice_format"] == "letter"


def test_wmdp_tiny_model_matches_direct_scoring_and_is_batch_invariant(model, tokenizer):
    data = load_wmdp(("bio", "chem", "cyber"), wmdp_dir(), limit=2)
    big = evaluate_wmdp(model, tokenizer, data, batch_size=32)
    small = evaluate_wmdp(model, tokenizer, data, batch_size=3)
    assert big["n"] == 6 and set(big["per_subset"]) == {"bio", "chem", "cyber"}
    assert 0.0 <= big["accuracy"] <= 1.0
    for name in data:
        np.testing.assert_allclose(big["per_sample"][name]["loglikelihoods"],
                                   small["per_sample"][name]["loglikelihoods"], atol=1e-4)
    fmt = MultipleChoiceFormat()
    row = data["cyber"][1]
    examples = [fmt.encode(tokenizer, fmt.prompt(row, "cybersecurity"), o) for o in fmt.options(row)]
    direct, _ = score_examples(model, examples, tokenizer.pad_token_id)
    np.testing.assert_allclose(big["per_sample"]["cyber"]["loglikelihoods"][1], direct, atol=1e-4)


def test_mmlu_stand_in_files(tmp_path, tokenizer):
    (tmp_path / "astronomy_test.csv").write_text('"Which is a planet?",Mars,Sirius,Vega,Moon,A\n'
                                                 '"Largest planet?",Earth,Jupiter,Mars,Venus,B\n')
    rows = [{"question": "2 + 2?", "choices": ["3", "4", "5", "6"], "answer": 1}]
    (tmp_path / "elementary_mathematics.json").write_text(json.dumps(rows))
    data = load_mmlu(None, tmp_path)
    assert sorted(data) == ["astronomy", "elementary_mathematics"]
    assert data["astronomy"][1] == {"question": "Largest planet?", "choices": ["Earth", "Jupiter", "Mars", "Venus"], "answer": 1}
    model = LetterLover(len(tokenizer), tokenizer(" B", add_special_tokens=False)["input_ids"][-1])
    result = evaluate_mmlu(model, tokenizer, None, tmp_path)
    assert result["per_subset"]["astronomy"]["accuracy"] == pytest.approx(0.5)
    assert result["per_subset"]["elementary_mathematics"]["accuracy"] == 1.0
    assert result["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(UnlearnError, match="'anatomy' not found"):
        load_mmlu(["anatomy"], tmp_path)


def test_loader_errors(tmp_path):
    with pytest.raises(UnlearnError, match="valid: bio, chem, cyber"):
        load_wmdp(["physics"], tmp_path)
    with pytest.raises(UnlearnError, match="'bio' not found"):
        load_wmdp(["bio"], tmp_path)
    (tmp_path / "bio_questions.json").write_text(json.dumps([{"question": "q", "choices": ["a", "b"], "answer": 7}]))
    with pytest.raises(UnlearnError, match="answer must be an index 0-1"):
        load_wmdp(["bio"], tmp_path)


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'cais/wmdp' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UnlearnError, match="cais/wmdp.*pass data_dir"):
        load_wmdp(["bio"])
    with pytest.raises(UnlearnError, match="cais/mmlu"):
        load_mmlu(["anatomy"])


def test_lm_eval_missing_is_a_clear_error(monkeypatch, model, tokenizer):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    with pytest.raises(UnlearnError, match="pip install lm-eval"):
        evaluate_with_lm_eval(model, tokenizer, ["wmdp_bio"], num_fewshot=0, batch_size=4)


def short_rows(tokenizer, rows, n, budget=200):
    """The first n rows whose prompt fits the tiny model's 256 positions (lm-eval would truncate longer ones)."""
    fmt = MultipleChoiceFormat()
    fits = [r for r in rows if len(tokenizer(fmt.prompt(r, "cybersecurity"))["input_ids"]) < budget]
    assert len(fits) >= n
    return fits[:n]


class CountingModel(torch.nn.Module):
    """Wraps a model and records the batch size of every forward call."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.batches = model, []
        self.config, self.device, self.dtype = model.config, model.device, model.dtype

    def forward(self, input_ids, *args, **kwargs):
        self.batches.append(int(input_ids.shape[0]))
        return self.inner(input_ids, *args, **kwargs)

    def tie_weights(self):
        return None


def test_lm_eval_local_tasks_match_the_built_in_scorer(model, tokenizer, tmp_path):
    """lm-eval's own wmdp_* / mmlu_* configs on local rows give the same option log-likelihoods as ours
    (without BOS, lm-eval's HFLM default), and its batches never exceed batch_size."""
    pytest.importorskip("lm_eval")
    shared = load_wmdp(("bio", "cyber"), wmdp_dir())
    data = {"bio": short_rows(tokenizer, shared["bio"], 5), "cyber": short_rows(tokenizer, shared["cyber"], 4)}
    (tmp_path / "astronomy_test.csv").write_text('"Which is a planet?",Mars,Sirius,Vega,Moon,A\n'
                                                 '"Largest planet?",Earth,Jupiter,Mars,Venus,B\n')
    mmlu = load_mmlu(["astronomy"], tmp_path)
    local = {"wmdp_bio": data["bio"], "wmdp_cyber": data["cyber"], "mmlu_astronomy": mmlu["astronomy"]}
    counting = CountingModel(model)
    theirs = evaluate_with_lm_eval(counting, tokenizer, (), local=local, batch_size=2)
    assert counting.batches and max(counting.batches) <= 2
    fmt = MultipleChoiceFormat(add_special_tokens=False)
    ours = evaluate_multiple_choice(model, tokenizer, {"wmdp_bio": data["bio"], "wmdp_cyber": data["cyber"],
                                                       "mmlu_astronomy": mmlu["astronomy"]},
                                    topics={"wmdp_bio": "biology", "wmdp_cyber": "cybersecurity",
                                            "mmlu_astronomy": "astronomy"}, fmt=fmt)
    assert theirs["n"] == ours["n"] == 11 and set(theirs["per_subset"]) == set(local)
    for task in local:
        np.testing.assert_allclose(theirs["per_sample"][task]["loglikelihoods"],
                                   ours["per_sample"][task]["loglikelihoods"], atol=1e-4)
        assert theirs["per_sample"][task]["prediction"] == ours["per_sample"][task]["prediction"]
        assert theirs["per_subset"][task]["accuracy"] == pytest.approx(ours["per_subset"][task]["accuracy"])
    assert theirs["accuracy"] == pytest.approx(ours["accuracy"])
    assert theirs["settings"]["backend"] == "lm_eval" and theirs["settings"]["batch_size"] == 2
    limited = evaluate_with_lm_eval(model, tokenizer, (), local={"wmdp_bio": data["bio"]}, batch_size=4, limit=2)
    assert limited["n"] == 2
    with pytest.raises(UnlearnError, match="no task 'wmdp_physics'"):
        evaluate_with_lm_eval(model, tokenizer, (), local={"wmdp_physics": data["bio"]})
    assert set(local_tasks("wmdp", wmdp_dir(), limit=1)) == {"wmdp_bio", "wmdp_cyber"}
    assert list(local_tasks("mmlu", tmp_path)) == ["mmlu_astronomy"]


def test_unlearn_eval_wmdp_cli_on_local_files(tmp_path, cache_dir, env, isolated_env):
    import json

    from typer.testing import CliRunner

    from unlearnkit.cli import app
    from unlearnkit.world.build import ensure_world

    model_dir = ensure_world(cache_dir, size="small", progress=False, log=lambda m: None).target_dir
    data = tmp_path / "wmdp"
    data.mkdir()
    rows = [{"question": f"Which option is number {i}?", "choices": ["one", "two", "three", "four"], "answer": i % 4}
            for i in range(3)]
    (data / "bio_questions.json").write_text(json.dumps(rows))
    (data / "cyber_questions.json").write_text(json.dumps(rows[:2]))
    result = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "-b", "wmdp", "--data-dir", str(data),
                                      "--out", str(tmp_path / "out"), "-q"], env=env)
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert evaluated["n"] == 5 and set(evaluated["per_subset"]) == {"bio", "cyber"}
    assert 0.0 <= evaluated["metrics"]["accuracy"] <= 1.0 and "| bio_accuracy |" in (tmp_path / "out" / "eval.md").read_text()
    if importlib.util.find_spec("lm_eval") is None:
        return  # the lm-eval route is covered where lm-eval is installed (dev extras install it)
    result = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "-b", "wmdp", "--data-dir", str(data),
                                      "--backend", "lm_eval", "--limit", "2", "--out", str(tmp_path / "lm"), "-q"], env=env)
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "lm" / "eval.json").read_text())
    assert evaluated["n"] == 4 and set(evaluated["per_subset"]) == {"wmdp_bio", "wmdp_cyber"}
    assert evaluated["settings"]["backend"] == "lm_eval"
    result = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "-b", "world", "--backend", "lm_eval",
                                      "--out", str(tmp_path / "bad")], env=env)
    assert result.exit_code != 0 and "--backend lm_eval scores wmdp and mmlu" in result.output
