"""privacy_metrics end to end on a tiny Llama, and the shared token_statistics pass it is built on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnkit.benchmarks.passes import score_examples, token_statistics
from unlearnkit.benchmarks.privacy import privacy_metrics
from unlearnkit.data.batch import IGNORE_INDEX
from unlearnkit.errors import UnlearnError
from unlearnkit.metrics import memorization, mia

FORGET = [
    {"question": "Who wrote the book?", "answer": "The book was written by Ana Ruiz."},
    {"question": "Where was the author born?", "answer": "The author was born in Lima, Peru."},
    {"question": "What genre does she write?", "answer": "She writes crime novels and short stories."},
]
HOLDOUT = [
    {"question": "What did the cat do?", "answer": "The cat sat on the mat."},
    {"question": "Where did the dog run?", "answer": "The dog ran in the park."},
]
KEYS = {"mia_loss", "mia_zlib", "mia_reference", "mia_gradnorm", "mia_min_k", "mia_min_k_plus_plus",
        "privleak", "extraction_strength", "exact_memorization", "per_sample"}


def direct_statistics(model, example):
    """Per-token numbers of one example without padding or shared code."""
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    rows = [t for t in range(1, len(example.input_ids)) if example.labels[t] != IGNORE_INDEX]
    dist = logp[[t - 1 for t in rows]]  # (n, V) next-token distributions
    p = dist.exp()
    mean = (p * dist).sum(-1)
    variance = ((dist - mean[:, None]) ** 2 * p).sum(-1)
    picked = dist[torch.arange(len(rows)), torch.tensor([example.input_ids[t] for t in rows])]
    return picked.numpy(), mean.numpy(), variance.numpy(), dist.argmax(-1).numpy()


@pytest.fixture(scope="module")
def examples(tokenizer, fmt):
    return [fmt.encode(tokenizer, row["question"], row["answer"]) for row in FORGET + HOLDOUT]


def test_token_statistics_match_direct_computation_and_score_examples(model, tokenizer, examples):
    stats = token_statistics(model, examples, tokenizer.pad_token_id, batch_size=2)
    summed, counts = score_examples(model, examples, tokenizer.pad_token_id, batch_size=3)
    for example, got, total, count in zip(examples, stats, summed, counts):
        logprobs, mean, variance, predictions = direct_statistics(model, example)
        np.testing.assert_allclose(got.logprobs, logprobs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.mean, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got.variance, variance, rtol=1e-4, atol=1e-5)
        assert got.predictions.tolist() == predictions.tolist()
        assert got.targets.tolist() == [label for label in example.labels if label != IGNORE_INDEX]
        assert got.targets[-1] == tokenizer.eos_token_id and got.logprobs.size == count
        assert got.logprobs.sum() == pytest.approx(total, abs=1e-4)
    assert token_statistics(model, [], tokenizer.pad_token_id) == []


def test_privacy_metrics_end_to_end(model, tokenizer, fmt, examples):
    report = privacy_metrics(model, tokenizer, FORGET, HOLDOUT, fmt, batch_size=2)
    assert set(report) == KEYS | {"privleak_reference"}
    assert report["mia_reference"] is None
    # without a retain model privleak is against OpenUnlearning's default reference AUC, 0.5, and says so
    assert report["privleak"] == pytest.approx(mia.privleak(report["mia_min_k"], 0.5))
    assert report["privleak_reference"] == {"auc": 0.5, "source": "default (no retain model: OpenUnlearning's"
                                                                   " reference AUC 0.5)"}
    for key in ("mia_loss", "mia_zlib", "mia_gradnorm", "mia_min_k", "mia_min_k_plus_plus"):
        assert 0.0 <= report[key] <= 1.0
    forget, holdout = report["per_sample"]["forget"], report["per_sample"]["holdout"]
    assert set(forget) == {"loss", "zlib", "gradnorm", "min_k", "min_k_plus_plus", "extraction_strength",
                           "exact_memorization"}
    assert all(len(values) == len(FORGET) for values in forget.values())
    assert all(len(values) == len(HOLDOUT) for values in holdout.values())
    assert report["mia_min_k"] == pytest.approx(mia.auc(forget["min_k"], holdout["min_k"]))

    # every per-sample number against a direct, unbatched computation (EOS dropped for token-level ones)
    for index, example in enumerate(examples[: len(FORGET)]):
        logprobs, mean, variance, predictions = direct_statistics(model, example)
        answer = FORGET[index]["answer"]
        loss = -logprobs.mean()
        assert forget["loss"][index] == pytest.approx(loss, rel=1e-5)
        assert forget["zlib"][index] == pytest.approx(loss / mia.zlib_entropy(answer), rel=1e-5)
        assert forget["min_k"][index] == pytest.approx(mia.min_k_score(logprobs[:-1], 0.4), rel=1e-5)
        assert forget["min_k_plus_plus"][index] == pytest.approx(
            mia.min_k_plus_plus_score(logprobs[:-1], mean[:-1], variance[:-1], 0.4), rel=1e-4)
        targets = [t for t in example.labels if t != IGNORE_INDEX][:-1]
        assert forget["extraction_strength"][index] == memorization.extraction_strength(predictions[:-1], targets)
        assert forget["exact_memorization"][index] == memorization.exact_memorization(predictions[:-1], targets)
    assert report["extraction_strength"] == pytest.approx(np.mean(forget["extraction_strength"]))
    assert report["exact_memorization"] == pytest.approx(np.mean(forget["exact_memorization"]))


def test_gradnorm_matches_a_manual_backward_and_leaves_the_model_alone(model, tokenizer, fmt, examples):
    report = privacy_metrics(model, tokenizer, FORGET[:1], HOLDOUT[:1], fmt)
    example = examples[0]
    ids = torch.tensor([example.input_ids])
    model.zero_grad(set_to_none=True)
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    rows = [t for t in range(1, len(example.input_ids)) if example.labels[t] != IGNORE_INDEX][:-1]
    loss = -torch.stack([logp[t - 1, example.input_ids[t]] for t in rows]).mean()
    loss.backward()
    expected = torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).mean().item()
    model.zero_grad(set_to_none=True)
    assert report["per_sample"]["forget"]["gradnorm"][0] == pytest.approx(expected, rel=1e-4)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_identical_sets_give_one_half_and_privleak_formula(model, tokenizer, fmt):
    report = privacy_metrics(model, tokenizer, FORGET, FORGET, fmt, reference_model=model, retain_min_k_auc=0.6)
    for key in ("mia_loss", "mia_zlib", "mia_reference", "mia_gradnorm", "mia_min_k", "mia_min_k_plus_plus"):
        assert report[key] == 0.5, key
    # the model is its own reference: every Reference score is 0
    assert report["per_sample"]["forget"]["reference"] == pytest.approx([0.0] * len(FORGET), abs=1e-5)
    assert report["privleak"] == pytest.approx(((1 - 0.5) - (1 - 0.6)) / (1 - 0.6) * 100)


def test_frozen_model_gets_gradnorm_and_stays_frozen(model, tokenizer, fmt):
    for param in model.parameters():
        param.requires_grad_(False)
    try:
        report = privacy_metrics(model, tokenizer, FORGET[:1], HOLDOUT[:1], fmt)
        assert report["per_sample"]["forget"]["gradnorm"][0] > 0
        assert not any(param.requires_grad for param in model.parameters())
    finally:
        for param in model.parameters():
            param.requires_grad_(True)


def test_bad_rows_are_user_errors(model, tokenizer, fmt):
    with pytest.raises(UnlearnError, match="holdout set is empty"):
        privacy_metrics(model, tokenizer, FORGET, [], fmt)
    with pytest.raises(UnlearnError, match="missing answer"):
        privacy_metrics(model, tokenizer, [{"question": "q"}], HOLDOUT, fmt)


def test_text_privleak_for_muse(tmp_path):
    from unlearnkit.benchmarks.privacy import muse_privleak, text_min_k_auc
    from unlearnkit.metrics import mia
    from unlearnkit.model import tiny_llama
    from unlearnkit.world.tokenizer import train_world_tokenizer

    texts = [f"The river at town {i} ran north for {i} miles." for i in range(8)]
    tokenizer = train_world_tokenizer(texts, vocab_size=300)
    model = tiny_llama(len(tokenizer), hidden=32, layers=2, heads=2, bos_id=tokenizer.bos_token_id,
                       eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id).eval()
    assert text_min_k_auc(model, tokenizer, texts[:4], texts[:4]) == 0.5  # identical sets
    fn = muse_privleak(retain_auc=0.5)
    result = fn(model, tokenizer, {"forget": texts[:4], "holdout": texts[4:], "retain": []})
    assert 0.0 <= result["mia_min_k"] <= 1.0
    assert result["privleak"] == pytest.approx(mia.privleak(result["mia_min_k"], 0.5))
    alone = muse_privleak()(model, tokenizer, {"forget": texts[:2], "holdout": texts[2:4]})
    assert alone["privleak"] == pytest.approx(mia.privleak(alone["mia_min_k"], 0.5))  # the default reference


def test_privleak_without_a_reference_matches_openunlearnings_convention():
    # OpenUnlearning's reference AUC without retain logs is 0.5: a Min-K% AUC of 0.519375 gives −3.875
    assert mia.privleak(0.519375, 0.5) == pytest.approx(-3.875)
