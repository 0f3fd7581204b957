"""Summary statistics of TOFU: forget quality and model utility (OpenUnlearning ``ks_test``, ``hm_aggregate``).

* Forget quality = p-value of the two-sided two-sample Kolmogorov–Smirnov test
  (``scipy.stats.ks_2samp``, default ``method="auto"``: exact for small samples) between the per-sample
  forget-set truth ratios of the evaluated model and those of the *retain model* (trained without the
  forget set) on the same questions. High (→ 1) means indistinguishable from never having seen the data.
  Without the retain model's ratios there is nothing to compare with and it is None.
* Model utility = harmonic mean ``scipy.stats.hmean`` of the nine retain/real-author/world-fact numbers
  n / Σ_k 1/v_k. If any value is 0 the harmonic mean is 0 (its limit; scipy returns 0 too), so one
  collapsed ability zeroes the utility. A NaN value gives NaN.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MODEL_UTILITY_KEYS = (
    "retain_prob", "retain_rouge", "retain_truth_ratio",
    "ra_prob_normalised", "ra_rouge", "ra_truth_ratio",
    "wf_prob_normalised", "wf_rouge", "wf_truth_ratio",
)


def forget_quality(
    unlearned_truth_ratios: Sequence[float], retain_truth_ratios: Sequence[float] | None
) -> float | None:
    """KS-test p-value between the two truth-ratio samples; None when no retain-model ratios are given."""
    if retain_truth_ratios is None or len(retain_truth_ratios) == 0:
        return None
    if len(unlearned_truth_ratios) == 0:
        raise ValueError("forget_quality needs at least one truth ratio of the evaluated model")
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(unlearned_truth_ratios, dtype=np.float64),
                      np.asarray(retain_truth_ratios, dtype=np.float64))
    return float(result.pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """n / Σ 1/v for non-negative values; 0 as soon as one value is 0."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("harmonic_mean needs at least one value")
    if np.any(array < 0):
        raise ValueError(f"harmonic_mean is defined for non-negative values; got {array.tolist()}")
    if np.any(array == 0):
        return 0.0
    from scipy.stats import hmean

    return float(hmean(array))


def model_utility(metrics: dict[str, float]) -> float:
    """Harmonic mean of the nine ``MODEL_UTILITY_KEYS`` entries of ``metrics``."""
    missing = [key for key in MODEL_UTILITY_KEYS if metrics.get(key) is None]
    if missing:
        raise KeyError(f"model_utility needs {', '.join(MODEL_UTILITY_KEYS)}; missing: {', '.join(missing)}")
    return harmonic_mean([metrics[key] for key in MODEL_UTILITY_KEYS])
