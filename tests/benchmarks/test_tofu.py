"""evaluate_tofu on a tiny model: keys, finiteness, per-sample shapes, one scoring pass per split, and
agreement of every metric with a recomputation from independent per-example numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unlearnkit.benchmarks.passes import score_examples
from unlearnkit.benchmarks.tofu import TofuResult, evaluate_tofu
from unlearnkit.errors import UnlearnError
from unlearnkit.metrics.text import rouge

KEYS = [
    "forget_prob", "forget_rouge", "forget_truth_ratio", "forget_quality", "retain_prob", "retain_rouge",
    "retain_truth_ratio", "ra_prob", "ra_prob_normalised", "ra_rouge", "ra_truth_ratio", "wf_prob",
    "wf_prob_normalised", "wf_rouge", "wf_truth_ratio", "model_utility",
]


@pytest.fixture(scope="module")
def result(model, tokenizer, tiny_splits, fmt) -> TofuResult:
    return evaluate_tofu(model, tokenizer, tiny_splits, fmt, batch_size=64, max_new_tokens=6)


def test_all_keys_present_and_finite(result):
    assert list(result.metrics) == KEYS
    assert result.metrics["forget_quality"] is None
    for key, value in result.metrics.items():
        if key != "forget_quality":
            assert isinstance(value, float) and math.isfinite(value), key
            assert 0.0 <= value <= 1.0, key


def test_per_sample_lengths_and_columns(result, tiny_splits):
    for split in ("forget", "retain", "real_authors", "world_facts"):
        rows = getattr(tiny_splits, split)
        columns = result.per_sample[split]
        expected = {"question", "answer", "generation", "prob", "rouge_l_recall", "rouge_l_f1", "rouge1_recall",
                    "truth_ratio"}
        if split in ("real_authors", "world_facts"):
            expected.add("prob_normalised")
        assert set(columns) == expected
        assert all(len(values) == len(rows) for values in columns.values())
        assert columns["answer"] == [row["answer"] for row in rows]
    assert result.forget_truth_ratios == result.per_sample["forget"]["truth_ratio"]
    assert {"score", "generation"} <= set(result.seconds)  # the evaluator's passes


def test_metrics_match_independent_recomputation(result, model, tokenizer, tiny_splits, fmt):
    """Score each sequence alone (batch of one) and recompute OpenUnlearning's formulas by hand."""

    def prob_and_loss(question, answer):
        summed, count = score_examples(model, [fmt.encode(tokenizer, question, answer)], tokenizer.pad_token_id)
        loss = -summed[0] / count[0]
        return math.exp(-loss), loss

    def truth_ratio(question, true_answer, perturbed):
        _, true_loss = prob_and_loss(question, true_answer)
        false_loss = np.mean([prob_and_loss(question, a)[1] for a in perturbed])
        return math.exp(-false_loss) / (math.exp(-true_loss) + 1e-10)

    forget = tiny_splits.forget
    tr = [truth_ratio(r["question"], r["paraphrased_answer"], r["perturbed_answer"]) for r in forget]
    assert result.forget_truth_ratios == pytest.approx(tr, rel=1e-5)
    assert result.metrics["forget_truth_ratio"] == pytest.approx(np.mean([min(t, 1 / t) for t in tr]), rel=1e-5)
    assert result.metrics["forget_prob"] == pytest.approx(
        np.mean([prob_and_loss(r["question"], r["answer"])[0] for r in forget]), rel=1e-5)

    retain_tr = [truth_ratio(r["question"], r["paraphrased_answer"], r["perturbed_answer"])
                 for r in tiny_splits.retain]
    assert result.metrics["retain_truth_ratio"] == pytest.approx(np.mean([max(0, 1 - t) for t in retain_tr]),
                                                                 rel=1e-5, abs=1e-9)

    ra = tiny_splits.real_authors
    # on real authors the original answer is the "true" one
    ra_tr = [truth_ratio(r["question"], r["answer"], r["perturbed_answer"]) for r in ra]
    assert result.per_sample["real_authors"]["truth_ratio"] == pytest.approx(ra_tr, rel=1e-5)
    shares = []
    for r in ra:
        p = prob_and_loss(r["question"], r["answer"])[0]
        shares.append(p / (p + sum(prob_and_loss(r["question"], a)[0] for a in r["perturbed_answer"]) + 1e-10))
    assert result.metrics["ra_prob_normalised"] == pytest.approx(np.mean(shares), rel=1e-5)

    generations = result.per_sample["retain"]["generation"]
    recalls = [rouge(r["answer"], g)["rougeL_recall"] for r, g in zip(tiny_splits.retain, generations)]
    assert result.metrics["retain_rouge"] == pytest.approx(np.mean(recalls))

    nine = [result.metrics[k] for k in ("retain_prob", "retain_rouge", "retain_truth_ratio", "ra_prob_normalised",
                                         "ra_rouge", "ra_truth_ratio", "wf_prob_normalised", "wf_rouge",
                                         "wf_truth_ratio")]
    expected_utility = 0.0 if min(nine) == 0 else len(nine) / sum(1 / v for v in nine)
    assert result.metrics["model_utility"] == pytest.approx(expected_utility)


@pytest.mark.parametrize("share", [False, True])
def test_one_scoring_pass_for_every_split(model, tokenizer, tiny_splits, fmt, monkeypatch, share):
    import unlearnkit.benchmarks.evaluator as evaluator_module
    import unlearnkit.benchmarks.passes as passes_module

    monkeypatch.setattr(passes_module, "SHARE_PREFIXES", share)

    calls, forwards = [], []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))

    def counting(model_, examples, *args, **kwargs):
        before = len(forwards)
        out = score_examples(model_, examples, *args, **kwargs)
        calls.append((len(examples), len(forwards) - before))
        return out

    monkeypatch.setattr(evaluator_module, "score_examples", counting)
    try:
        evaluate_tofu(model, tokenizer, tiny_splits, fmt, batch_size=64, max_new_tokens=2)
    finally:
        handle.remove()
    # forget 2 rows × (answer + paraphrase + 3 perturbed), retain 3 × (1 + 1 + 2), ra 2 × (1 + 3), wf 1 × (1 + 2):
    # every split's sequences in one pass, one batch: one forward, or with shared prefixes one over the questions'
    # prompts and one over the answers
    assert calls == [(10 + 12 + 8 + 3, 2 if share else 1)]


def test_forget_quality_with_reference(model, tokenizer, tiny_splits, fmt, result):
    same = evaluate_tofu(model, tokenizer, tiny_splits, fmt, batch_size=64, max_new_tokens=2,
                         retain_truth_ratios=result.forget_truth_ratios)
    assert same.metrics["forget_quality"] == pytest.approx(1.0)
    other = evaluate_tofu(model, tokenizer, tiny_splits, fmt, batch_size=64, max_new_tokens=2,
                          retain_truth_ratios=[50.0, 60.0, 70.0])
    assert 0.0 <= other.metrics["forget_quality"] < 1.0


def test_to_dict_is_json_serialisable(result):
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["metrics"]["forget_quality"] is None
    assert set(payload) == {"metrics", "per_sample", "forget_truth_ratios", "seconds"}


def test_question_key_and_bad_rows(model, tokenizer, tiny_splits, fmt):
    para = evaluate_tofu(model, tokenizer, tiny_splits, fmt, batch_size=64, max_new_tokens=2,
                         question_key="paraphrased_question")
    assert para.per_sample["forget"]["question"] == [r["paraphrased_question"] for r in tiny_splits.forget]
    assert para.per_sample["real_authors"]["question"] == [r["question"] for r in tiny_splits.real_authors]

    class Broken:
        forget = [{"question": "q", "answer": "a"}]
        retain = real_authors = world_facts = []

    with pytest.raises(UnlearnError, match="paraphrased_answer"):
        evaluate_tofu(model, tokenizer, Broken(), fmt, max_new_tokens=2)
