"""Membership-inference attacks (MIAs) and privleak, exactly as OpenUnlearning defines them.

Every attack gives each sample a score such that **higher means less likely to be a member** (a loss-like
number). The attacks run on the forget set (members) and on a holdout set of unseen data (non-members).

Per-sample scores, with ℓ̄ = −log π(y|x) / |y| the mean token NLL over the answer (EOS included, as in
OpenUnlearning's ``evaluate_probability``) and lp_1..lp_N the answer's token log-probs **without the final
labelled token (the EOS)** (OpenUnlearning's ``tokenwise_logprobs`` since its PR #101):

* LOSS        ℓ̄
* ZLib        ℓ̄ / len(zlib.compress(utf8(text)))        (text: the decoded answer)
* Reference   ℓ̄_θ − ℓ̄_ref                               (ref: a reference model, e.g. the retain model)
* GradNorm    mean over parameter tensors W of ‖∂L/∂W‖_p (p = 2), L = −mean_t lp_t of ONE sample;
              an average of per-tensor norms, not one global norm
* Min-K%      −mean of the ⌊k·N⌋ (at least 1) lowest lp_t                            (k = 0.4)
* Min-K%++    z_t = (lp_t − μ_t) / σ_t with μ_t = Σ_v p_v log p_v and σ_t² = Σ_v p_v (log p_v)² − μ_t²
              (clamped at ≥ 1e-6) under the model's own next-token distribution p at position t;
              score = −mean of the ⌊k·N⌋ (at least 1) lowest z_t
  A sample with no token left (N = 0) scores 0 in both Min-K variants, as in OpenUnlearning.

AUC convention (OpenUnlearning ``mia_auc``): ``roc_auc_score(labels, scores)`` with the forget set labelled
0 and the holdout set labelled **1**, i.e. the holdout is the positive class. Since scores are loss-like,
AUC = P(score(holdout) > score(forget)) + ½·P(tie): **AUC → 1 means the forget data looks strongly seen**,
0.5 means indistinguishable (a model that never saw the forget set sits near 0.5), and AUC → 0 means the
forget data looks *less* familiar than unseen data (over-unlearning).

privleak (MUSE; OpenUnlearning ``privleak``): with the Min-K% AUCs of the evaluated model and of the retain
model, MUSE reports 1 − AUC, so

    PL = ((1 − AUC_θ) − (1 − AUC_ret)) / ((1 − AUC_ret) + 1e-10) · 100

0 is ideal; negative means under-unlearned (a target model is near −100), positive over-unlearned; it is
unbounded above. OpenUnlearning falls back to AUC_ret = 0.5 when no retain-model logs are given.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from unlearnkit.metrics.likelihood import average_loss

ArrayLike = np.ndarray | Sequence[float]

MIN_K_PLUS_PLUS_MIN_VARIANCE = 1e-6  # OpenUnlearning's clamp on σ_t²
PRIVLEAK_EPSILON = 1e-10  # OpenUnlearning's guard in privleak's denominator


def loss_scores(summed_logprob: ArrayLike, n_tokens: ArrayLike) -> np.ndarray:
    """LOSS attack: ℓ̄ = −summed_logprob / n_tokens per sample."""
    return average_loss(summed_logprob, n_tokens)


def zlib_entropy(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (``zlib.compress`` at its default level)."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_scores(avg_loss: ArrayLike, texts: Sequence[str]) -> np.ndarray:
    """ZLib attack: ℓ̄ / zlib_entropy(text) per sample."""
    losses = np.asarray(avg_loss, dtype=np.float64)
    if len(texts) != losses.shape[0]:
        raise ValueError(f"zlib_scores needs one text per loss; got {len(texts)} texts for {losses.shape[0]} losses")
    return losses / np.array([zlib_entropy(text) for text in texts], dtype=np.float64)


def reference_scores(avg_loss: ArrayLike, reference_avg_loss: ArrayLike) -> np.ndarray:
    """Reference attack: ℓ̄_θ − ℓ̄_ref per sample."""
    return np.asarray(avg_loss, dtype=np.float64) - np.asarray(reference_avg_loss, dtype=np.float64)


def gradnorm_score(gradients: Sequence[Any], p: float = 2.0) -> float:
    """GradNorm attack for one sample: the mean over tensors of ‖g‖_p (``None`` gradients are skipped)."""
    import torch

    norms = [torch.as_tensor(g).detach().double().norm(p=p) for g in gradients if g is not None]
    if not norms:
        raise ValueError("gradnorm_score got no gradient; at least one parameter must take part in the loss")
    return float(torch.stack(norms).mean())


def _lowest_fraction_mean(values: np.ndarray, k: float) -> float:
    """−mean of the ⌊k·N⌋ (at least 1) lowest values; 0 for an empty sample."""
    if values.size == 0:
        return 0.0
    count = max(1, int(values.size * k))
    return float(-np.mean(np.sort(values)[:count]))


def _check_k(k: float) -> None:
    if not 0 < k <= 1:
        raise ValueError(f"k={k}: the Min-K% fraction must be in (0, 1] (OpenUnlearning uses 0.4)")


def min_k_score(token_logprobs: ArrayLike, k: float = 0.4) -> float:
    """Min-K% for one sample: −mean of its ⌊k·N⌋ (≥ 1) lowest token log-probs."""
    _check_k(k)
    return _lowest_fraction_mean(np.asarray(token_logprobs, dtype=np.float64), k)


def min_k_plus_plus_score(token_logprobs: ArrayLike, mean: ArrayLike, variance: ArrayLike, k: float = 0.4) -> float:
    """Min-K%++ for one sample from its token log-probs and the per-position μ_t and σ_t² (unclamped)."""
    _check_k(k)
    logprobs = np.asarray(token_logprobs, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    var = np.asarray(variance, dtype=np.float64)
    if not (logprobs.shape == mu.shape == var.shape):
        raise ValueError(f"min_k_plus_plus_score needs equal shapes; got {logprobs.shape}, {mu.shape}, {var.shape}")
    z = (logprobs - mu) / np.sqrt(np.maximum(var, MIN_K_PLUS_PLUS_MIN_VARIANCE))
    return _lowest_fraction_mean(z, k)


def auc(forget_scores: ArrayLike, holdout_scores: ArrayLike) -> float:
    """ROC AUC with the holdout (non-members) as the positive class: P(holdout > forget) + ½·P(tie).

    Equal to ``sklearn.metrics.roc_auc_score([0]*len(forget) + [1]*len(holdout), forget + holdout)``;
    computed as the Mann–Whitney U statistic with mid-ranks for ties. NaN when a score is not finite
    (a diverged model's losses or gradient norms overflow): the report shows it as non-finite.
    """
    from scipy.stats import rankdata

    forget = np.asarray(forget_scores, dtype=np.float64).ravel()
    holdout = np.asarray(holdout_scores, dtype=np.float64).ravel()
    if forget.size == 0 or holdout.size == 0:
        raise ValueError(f"auc needs scores for both sets; got {forget.size} forget and {holdout.size} holdout scores")
    if not (np.all(np.isfinite(forget)) and np.all(np.isfinite(holdout))):
        return float("nan")
    ranks = rankdata(np.concatenate([forget, holdout]))  # average ranks for ties
    holdout_rank_sum = ranks[forget.size:].sum()
    u_statistic = holdout_rank_sum - holdout.size * (holdout.size + 1) / 2
    return float(u_statistic / (forget.size * holdout.size))


def privleak(auc_unlearned: float, auc_retain: float) -> float:
    """PL = ((1 − AUC_θ) − (1 − AUC_ret)) / ((1 − AUC_ret) + 1e-10) · 100 (Min-K% AUCs; 0 is ideal)."""
    score, reference = 1.0 - float(auc_unlearned), 1.0 - float(auc_retain)
    return (score - reference) / (reference + PRIVLEAK_EPSILON) * 100.0
