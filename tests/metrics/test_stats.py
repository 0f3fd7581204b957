"""Forget quality (KS p-value) and model utility (harmonic mean) against independent computations."""

from __future__ import annotations

import math

import pytest

from unlearnkit.metrics.stats import MODEL_UTILITY_KEYS, forget_quality, harmonic_mean, model_utility


def test_forget_quality_none_without_reference():
    assert forget_quality([0.5, 0.7], None) is None
    assert forget_quality([0.5, 0.7], []) is None


def test_forget_quality_identical_samples_is_one():
    assert forget_quality([0.2, 0.5, 0.9, 1.3], [0.2, 0.5, 0.9, 1.3]) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [3, 4, 5])
def test_forget_quality_fully_separated_matches_exact_formula(n):
    # D = 1 happens only for the two orderings where one sample lies entirely below the other:
    # exact two-sided p-value = 2 / C(2n, n).
    low = [0.1 * k for k in range(1, n + 1)]
    high = [10.0 + k for k in range(n)]
    assert forget_quality(low, high) == pytest.approx(2 / math.comb(2 * n, n), rel=1e-9)
    assert forget_quality(high, low) == pytest.approx(2 / math.comb(2 * n, n), rel=1e-9)


def test_forget_quality_is_a_probability():
    value = forget_quality([0.1, 0.4, 0.8, 1.5, 2.0], [0.3, 0.5, 0.6, 0.9])
    assert 0.0 <= value <= 1.0


def test_harmonic_mean_known_values():
    assert harmonic_mean([1.0, 2.0, 4.0]) == pytest.approx(3 / (1 + 0.5 + 0.25))
    assert harmonic_mean([0.5]) == pytest.approx(0.5)


def test_harmonic_mean_zero_collapses_to_zero():
    assert harmonic_mean([0.9, 0.0, 0.8]) == 0.0


def test_harmonic_mean_rejects_negative_and_empty():
    with pytest.raises(ValueError):
        harmonic_mean([0.5, -0.1])
    with pytest.raises(ValueError):
        harmonic_mean([])


def test_model_utility_uses_exactly_the_nine_keys():
    metrics = {key: 0.5 for key in MODEL_UTILITY_KEYS}
    metrics["forget_prob"] = 0.0  # not part of utility
    assert len(MODEL_UTILITY_KEYS) == 9
    assert model_utility(metrics) == pytest.approx(0.5)
    metrics["wf_rouge"] = 0.25
    assert model_utility(metrics) == pytest.approx(9 / (8 * 2 + 4))
    del metrics["ra_rouge"]
    with pytest.raises(KeyError, match="ra_rouge"):
        model_utility(metrics)
