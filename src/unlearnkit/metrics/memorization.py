"""Memorisation metrics from teacher-forced predictions (OpenUnlearning ``exact_memorization``,
``extraction_strength``).

Inputs per sample: the model's argmax predictions ŷ_t = argmax_v π_θ(v | x, y_<t) and the labels y_t over
the answer tokens t = 1..N, **without the final labelled token (the EOS)**, as OpenUnlearning's
``tokenwise_vocab_logprobs`` gives them since its PR #101. No free generation is involved.

* Exact memorisation   EM = (1/N) Σ_t 1[ŷ_t = y_t]                 (None when N = 0, skipped in the mean)
* Extraction strength  ES = 1 − k*/N, k* the smallest 0-based k such that ŷ_{k..N} = y_{k..N}
  (the shortest prefix that has to be given before the model completes the rest by itself).
  ES = 1 when every token is predicted, 0 when not even the last one is.

The 1/N floor (OpenUnlearning's loop quirk, kept by default): the reference loops ``for k in range(N)``
and breaks at the first matching suffix, so when no suffix matches k ends at N − 1 rather than N and
ES = 1/N instead of 0 — "nothing predicted" and "only the last token predicted" give the same number.
``reference_floor=False`` returns the intended 0 for no match. An empty sample (N = 0) scores 0, as in
the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = np.ndarray | Sequence[int]


def _pair(predictions: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    preds = np.asarray(predictions, dtype=np.int64).ravel()
    labels = np.asarray(targets, dtype=np.int64).ravel()
    if preds.shape != labels.shape:
        raise ValueError(f"need one prediction per label; got {preds.size} predictions for {labels.size} labels")
    return preds, labels


def exact_memorization(predictions: ArrayLike, targets: ArrayLike) -> float | None:
    """EM of one sample: the fraction of answer tokens the model predicts exactly (None if it has none)."""
    preds, labels = _pair(predictions, targets)
    if labels.size == 0:
        return None
    return float(np.mean(preds == labels))


def extraction_strength(predictions: ArrayLike, targets: ArrayLike, reference_floor: bool = True) -> float:
    """ES of one sample: 1 − k*/N; with ``reference_floor`` (default) no match gives 1/N, otherwise 0."""
    preds, labels = _pair(predictions, targets)
    n = labels.size
    if n == 0:
        return 0.0
    wrong = np.flatnonzero(preds != labels)
    # The smallest k whose suffix matches is one past the last wrong prediction (0 if none is wrong).
    k_star = 0 if wrong.size == 0 else int(wrong[-1]) + 1
    if k_star == n and reference_floor:
        k_star = n - 1
    return 1.0 - k_star / n


def mean_exact_memorization(per_sample: Sequence[float | None]) -> float | None:
    """Mean EM over samples, skipping None (samples without answer tokens); None if all are None."""
    values = [value for value in per_sample if value is not None]
    return float(np.mean(values)) if values else None
