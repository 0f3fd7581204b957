"""Exact memorisation and extraction strength on hand-made teacher-forced predictions."""

from __future__ import annotations

import pytest

from unlearnkit.metrics.memorization import (
    exact_memorization,
    extraction_strength,
    mean_exact_memorization,
)


def test_exact_memorization_fraction_of_matches():
    assert exact_memorization([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert exact_memorization([1, 9, 3, 9], [1, 2, 3, 4]) == 0.5
    assert exact_memorization([9, 9], [1, 2]) == 0.0
    assert exact_memorization([], []) is None
    with pytest.raises(ValueError, match="one prediction per label"):
        exact_memorization([1], [1, 2])


def test_mean_exact_memorization_skips_none():
    assert mean_exact_memorization([1.0, None, 0.5]) == 0.75
    assert mean_exact_memorization([None]) is None


@pytest.mark.parametrize("predictions, expected", [
    ([1, 2, 3, 4], 1.0),        # all predicted: k* = 0
    ([9, 2, 3, 4], 0.75),       # suffix from k = 1 matches: 1 − 1/4
    ([1, 9, 3, 4], 0.5),        # a mistake at 1 (even with token 0 right): k* = 2
    ([1, 2, 3, 9], 0.25),       # last token wrong: nothing matches → the 1/N floor
    ([9, 9, 9, 4], 0.25),       # only the last token right: k* = 3 → also 1/N
    ([9, 9, 9, 9], 0.25),       # nothing right: the reference's floor 1/N, not 0
])
def test_extraction_strength_reference(predictions, expected):
    assert extraction_strength(predictions, [1, 2, 3, 4]) == pytest.approx(expected)


@pytest.mark.parametrize("predictions, expected", [
    ([1, 2, 3, 4], 1.0), ([9, 2, 3, 4], 0.75), ([9, 9, 9, 4], 0.25), ([1, 2, 3, 9], 0.0), ([9, 9, 9, 9], 0.0),
])
def test_extraction_strength_without_floor(predictions, expected):
    assert extraction_strength(predictions, [1, 2, 3, 4], reference_floor=False) == pytest.approx(expected)


def test_extraction_strength_edge_cases():
    assert extraction_strength([], []) == 0.0
    assert extraction_strength([5], [5]) == 1.0
    assert extraction_strength([6], [5]) == 1.0  # N = 1: the floor 1/N is 1 — the quirk at its worst
    assert extraction_strength([6], [5], reference_floor=False) == 0.0
