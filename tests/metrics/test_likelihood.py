"""Likelihood metrics on hand-worked numbers (OpenUnlearning's definitions, 1e-10 guards included)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearnkit.metrics.likelihood import (
    average_loss,
    closer_to_1_better,
    normalised_probability,
    prob_mean,
    prob_mean_truth_ratios,
    probability_over_options,
    true_better,
    truth_ratio_parts,
    truth_ratios,
)


def test_normalised_probability_is_geometric_mean_token_probability():
    # two sequences: tokens with probs (0.5, 0.5) and (0.25, 1.0, 0.5, 0.5)
    summed = [2 * math.log(0.5), math.log(0.25) + math.log(0.5) * 2]
    counts = [2, 4]
    assert average_loss(summed, counts) == pytest.approx([math.log(2), math.log(16) / 4])
    assert normalised_probability(summed, counts) == pytest.approx([0.5, 0.5])


def test_zero_token_sequence_gives_nan_not_an_error():
    assert np.isnan(normalised_probability([0.0], [0])[0])


def test_probability_over_options():
    correct = [0.5, 0.1]
    wrong = [[0.25, 0.25], [0.1, 0.2]]
    expected = [0.5 / (0.5 + 0.5 + 1e-10), 0.1 / (0.1 + 0.3 + 1e-10)]
    assert probability_over_options(correct, wrong) == pytest.approx(expected, rel=1e-12)
    # ragged lists (different numbers of perturbed answers) give the same per-row result
    ragged = probability_over_options([0.5, 0.1], [[0.5], [0.1, 0.1, 0.1]])
    assert ragged == pytest.approx([0.5, 0.25])


# Three hand-worked samples: avg losses of the true answer and of the perturbed answers.
#  1: P_true = 0.5, perturbed P̄ = 0.5, 0.125   -> P_false = exp(-mean(ln2, ln8)) = 1/4   -> TR = 0.5
#  2: P_true = 0.25, perturbed P̄ = 0.25, 0.25  -> P_false = 0.25                        -> TR = 1
#  3: P_true = 0.1, perturbed P̄ = 0.2, 0.2     -> P_false = 0.2                          -> TR = 2
CORRECT = [math.log(2), math.log(4), math.log(10)]
WRONG = [[math.log(2), math.log(8)], [math.log(4), math.log(4)], [math.log(5), math.log(5)]]


def test_truth_ratio_uses_geometric_mean_of_perturbed_probabilities():
    p_true, p_false = truth_ratio_parts(CORRECT, WRONG)
    assert p_true == pytest.approx([0.5, 0.25, 0.1])
    assert p_false == pytest.approx([0.25, 0.25, 0.2])
    assert truth_ratios(CORRECT, WRONG) == pytest.approx([0.5, 1.0, 2.0], rel=1e-9)
    assert truth_ratios(CORRECT, np.array(WRONG)) == pytest.approx([0.5, 1.0, 2.0], rel=1e-9)


def test_aggregations():
    tr = np.array([0.5, 1.0, 2.0])
    # forget: min(TR, 1/TR) = 0.5, 1, 0.5
    assert closer_to_1_better(tr) == pytest.approx(2.0 / 3.0, rel=1e-9)
    # retain: max(0, 1-TR) = 0.5, 0, 0
    assert true_better(tr) == pytest.approx(0.5 / 3.0)
    # paper definition: P_true / (P_true + P_false) = 2/3, 1/2, 1/3
    assert prob_mean_truth_ratios(CORRECT, WRONG) == pytest.approx([2 / 3, 1 / 2, 1 / 3])
    assert prob_mean(CORRECT, WRONG) == pytest.approx(0.5)


def test_closer_to_1_better_keeps_openunlearning_epsilon():
    # a zero truth ratio is min(0, 1/1e-10) = 0, not a division error
    assert closer_to_1_better([0.0, 1.0]) == pytest.approx(0.5)


def test_empty_perturbed_list_is_an_error():
    with pytest.raises(ValueError, match="perturbed"):
        truth_ratios([0.1], [[]])
