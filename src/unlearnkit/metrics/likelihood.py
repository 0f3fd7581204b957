"""Likelihood metrics over teacher-forced log-probabilities, exactly as OpenUnlearning defines them.

Inputs are per-sequence numbers from one forward pass (see ``unlearnkit.benchmarks.passes``): the
summed log-probability of the supervised (answer) tokens, log π(y|x) = Σ_t log π(y_t | x, y_<t), and
their count |y| (the answer tokens plus the final EOS, which the prompt format appends and labels).

* average loss        ℓ̄(y|x) = −log π(y|x) / |y|
* normalised prob.    P̄(y|x) = exp(−ℓ̄(y|x)) = exp(log π(y|x) / |y|)   (geometric-mean token probability)
* option-normalised   P̄(a) / (P̄(a) + Σ_j P̄(â_j) + 1e-10)              (a: correct answer, â_j: perturbed ones)
* truth ratio         TR = P_false / (P_true + 1e-10),
                      P_true  = exp(−ℓ̄(a_true)),  P_false = exp(−mean_j ℓ̄(â_j))
  i.e. P_false is the geometric mean of the perturbed answers' normalised probabilities. The "true"
  answer is the paraphrased answer on TOFU forget/retain and the original answer on real authors and
  world facts.

Aggregations of per-sample truth ratios (OpenUnlearning ``truth_ratio`` aggregators):

* ``closer_to_1_better`` (forget set):    mean_i min(TR_i, 1 / (TR_i + 1e-10))
* ``true_better`` (retain, ra, wf):       mean_i max(0, 1 − TR_i)
* ``prob_mean`` (the OpenUnlearning paper's definition, not the default):
                                          mean_i P_true / (P_true + P_false + 1e-10)

The 1e-10 terms are OpenUnlearning's; they are kept so numbers agree to the last digit. Perturbed
answers may be given as a rectangular (N, K) array or as a ragged list of per-sample lists.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

EPSILON = 1e-10  # OpenUnlearning's guard in every ratio below

ArrayLike = np.ndarray | Sequence[float]
Ragged = np.ndarray | Sequence[Sequence[float]]


def average_loss(summed_logprob: ArrayLike, n_tokens: ArrayLike) -> np.ndarray:
    """ℓ̄ = −summed_logprob / n_tokens per sequence (NaN where a sequence has no supervised token)."""
    summed = np.asarray(summed_logprob, dtype=np.float64)
    count = np.asarray(n_tokens, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -summed / count


def normalised_probability(summed_logprob: ArrayLike, n_tokens: ArrayLike) -> np.ndarray:
    """P̄ = exp(summed_logprob / n_tokens): the length-normalised answer probability."""
    return np.exp(-average_loss(summed_logprob, n_tokens))


def _row_reduce(values: Ragged, reduce) -> np.ndarray:
    """Apply ``reduce`` to each sample's list of perturbed-answer values (rectangular or ragged)."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return reduce(values.astype(np.float64), axis=1)
    rows = [np.asarray(row, dtype=np.float64) for row in values]
    if any(row.size == 0 for row in rows):
        raise ValueError("every sample needs at least one perturbed answer; got an empty list")
    return np.array([reduce(row) for row in rows], dtype=np.float64)


def probability_over_options(correct_prob: ArrayLike, wrong_probs: Ragged) -> np.ndarray:
    """Per-sample P̄(a) / (P̄(a) + Σ_j P̄(â_j) + 1e-10): the correct answer's share among all options."""
    correct = np.asarray(correct_prob, dtype=np.float64)
    wrong = _row_reduce(wrong_probs, np.sum)
    return correct / (correct + wrong + EPSILON)


def truth_ratio_parts(correct_avg_loss: ArrayLike, wrong_avg_losses: Ragged) -> tuple[np.ndarray, np.ndarray]:
    """(P_true, P_false) per sample: exp(−ℓ̄(true)) and exp(−mean_j ℓ̄(perturbed_j))."""
    p_true = np.exp(-np.asarray(correct_avg_loss, dtype=np.float64))
    p_false = np.exp(-_row_reduce(wrong_avg_losses, np.mean))
    return p_true, p_false


def truth_ratios(correct_avg_loss: ArrayLike, wrong_avg_losses: Ragged) -> np.ndarray:
    """Per-sample TR = P_false / (P_true + 1e-10) (the per-sample "score" OpenUnlearning logs)."""
    p_true, p_false = truth_ratio_parts(correct_avg_loss, wrong_avg_losses)
    return p_false / (p_true + EPSILON)


def closer_to_1_better(truth_ratio: ArrayLike) -> float:
    """mean_i min(TR_i, 1/(TR_i + 1e-10)): 1 when true and false answers are equally likely (forget)."""
    tr = np.asarray(truth_ratio, dtype=np.float64)
    return float(np.mean(np.minimum(tr, 1.0 / (tr + EPSILON))))


def true_better(truth_ratio: ArrayLike) -> float:
    """mean_i max(0, 1 − TR_i): high when the true answer is much likelier than the false ones (retain)."""
    tr = np.asarray(truth_ratio, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, 1.0 - tr)))


def prob_mean_truth_ratios(correct_avg_loss: ArrayLike, wrong_avg_losses: Ragged) -> np.ndarray:
    """Per-sample TR' = P_true / (P_true + P_false + 1e-10) (OpenUnlearning's ``prob_mean`` option)."""
    p_true, p_false = truth_ratio_parts(correct_avg_loss, wrong_avg_losses)
    return p_true / (p_true + p_false + EPSILON)


def prob_mean(correct_avg_loss: ArrayLike, wrong_avg_losses: Ragged) -> float:
    """mean_i TR'_i, the truth ratio as the OpenUnlearning paper writes it (in [0, 1], higher = truer)."""
    return float(np.mean(prob_mean_truth_ratios(correct_avg_loss, wrong_avg_losses)))
