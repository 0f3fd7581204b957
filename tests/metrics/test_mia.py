"""MIA scores, the AUC convention and privleak against hand computations and closed forms."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from unlearnkit.metrics import mia


def test_auc_identical_sets_is_one_half():
    scores = [0.3, 1.2, 0.7, 2.5]
    assert mia.auc(scores, scores) == 0.5
    assert mia.auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5  # all tied


def test_auc_convention_holdout_is_positive_class():
    # forget (members) with low loss-like scores, holdout with high ones: the forget set looks seen → 1
    assert mia.auc([0.1, 0.2, 0.3], [1.0, 2.0]) == 1.0
    # reversed: the forget set looks less familiar than unseen data → 0
    assert mia.auc([1.0, 2.0], [0.1, 0.2, 0.3]) == 0.0


def test_auc_with_ties_counts_half():
    # pairs (f, h): (1,1) tie → ½, (1,2) → 1, (3,1) → 0, (3,2) → 0: (½ + 1) / 4
    assert mia.auc([1.0, 3.0], [1.0, 2.0]) == pytest.approx(1.5 / 4)


def test_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    forget, holdout = rng.integers(0, 5, 13).astype(float), rng.integers(0, 5, 9).astype(float)
    labels = [0] * len(forget) + [1] * len(holdout)
    expected = roc_auc_score(labels, np.concatenate([forget, holdout]))
    assert mia.auc(forget, holdout) == pytest.approx(expected, abs=1e-12)


def test_auc_rejects_empty_sets_and_is_nan_for_non_finite_scores():
    with pytest.raises(ValueError, match="both sets"):
        mia.auc([], [1.0])
    assert np.isnan(mia.auc([float("nan")], [1.0]))  # a diverged model: reported as non-finite, never a crash
    assert np.isnan(mia.auc([1.0], [float("inf")]))


def test_privleak_formula():
    # ((1 − 0.9) − (1 − 0.5)) / (1 − 0.5) · 100 = (0.1 − 0.5) / 0.5 · 100 = −80
    assert mia.privleak(0.9, 0.5) == pytest.approx(-80.0, rel=1e-8)
    assert mia.privleak(0.5, 0.5) == pytest.approx(0.0, abs=1e-12)
    # over-unlearned: AUC 0.2 vs retain 0.6 → (0.8 − 0.4) / 0.4 · 100 = 100
    assert mia.privleak(0.2, 0.6) == pytest.approx(100.0, rel=1e-8)
    # the 1e-10 guard keeps AUC_ret = 1 finite
    assert mia.privleak(0.5, 1.0) == pytest.approx(0.5 / 1e-10 * 100)


def test_loss_zlib_reference_scores():
    loss = mia.loss_scores([-6.0, -2.0], [3, 4])
    np.testing.assert_allclose(loss, [2.0, 0.5])
    text = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    length = len(zlib.compress(text.encode("utf-8")))
    assert mia.zlib_entropy(text) == length and length < len(text)
    assert mia.zlib_entropy("") == 8  # zlib header + empty deflate block + adler32
    np.testing.assert_allclose(mia.zlib_scores(loss, [text, ""]), [2.0 / length, 0.5 / 8])
    np.testing.assert_allclose(mia.reference_scores(loss, [1.5, 1.0]), [0.5, -0.5])
    with pytest.raises(ValueError, match="one text per loss"):
        mia.zlib_scores(loss, ["x"])


def test_min_k_on_hand_made_logprobs():
    logprobs = [-0.1, -3.0, -0.5, -2.0, -1.0]
    # k = 0.4: ⌊0.4·5⌋ = 2 lowest → −mean(−3, −2) = 2.5
    assert mia.min_k_score(logprobs, 0.4) == pytest.approx(2.5)
    # ⌊0.1·5⌋ = 0 → at least 1 → 3.0; k = 1 → −mean of all
    assert mia.min_k_score(logprobs, 0.1) == pytest.approx(3.0)
    assert mia.min_k_score(logprobs, 1.0) == pytest.approx(6.6 / 5)
    assert mia.min_k_score([], 0.4) == 0.0
    with pytest.raises(ValueError, match="fraction"):
        mia.min_k_score(logprobs, 0.0)


def test_min_k_plus_plus_against_direct_computation():
    torch.manual_seed(0)
    logits = torch.randn(6, 11, dtype=torch.float64)
    targets = torch.randint(0, 11, (6,))
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    lp = logp[torch.arange(6), targets]
    mean = (p * logp).sum(-1)
    variance = (p * logp**2).sum(-1) - mean**2
    # direct: z = (lp − E_p[log p]) / std_p[log p], lowest ⌊0.4·6⌋ = 2
    std = torch.sqrt(((logp - mean[:, None]) ** 2 * p).sum(-1))
    z = ((lp - mean) / std).numpy()
    expected = -np.mean(np.sort(z)[:2])
    got = mia.min_k_plus_plus_score(lp.numpy(), mean.numpy(), variance.numpy(), 0.4)
    assert got == pytest.approx(expected, rel=1e-9)


def test_min_k_plus_plus_clamps_variance():
    # a one-hot distribution has σ² = 0 → clamped at 1e-6 → σ = 1e-3
    got = mia.min_k_plus_plus_score([-1.0], [0.0], [0.0], 0.4)
    assert got == pytest.approx(1.0 / 1e-3)
    assert mia.min_k_plus_plus_score([], [], [], 0.4) == 0.0


def test_gradnorm_is_mean_of_per_tensor_norms():
    grads = [torch.tensor([3.0, 4.0]), None, torch.tensor([[0.0, 1.0]])]
    assert mia.gradnorm_score(grads) == pytest.approx((5.0 + 1.0) / 2)  # not the global norm √26
    assert mia.gradnorm_score(grads, p=1) == pytest.approx((7.0 + 1.0) / 2)
    with pytest.raises(ValueError, match="no gradient"):
        mia.gradnorm_score([None])
