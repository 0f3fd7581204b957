"""Log-likelihood building blocks. The only place that shifts and slices labels.

Notation (as in specs/methods.md): for a sequence with supervised positions A (labels ≠ −100,
after the one-token shift), the summed log-probability is log π(y|x) = Σ_{t∈A} log π(y_t | y_<t).
`sequence_logprob` returns it per row; `nll` is the Hugging Face causal-LM loss, the mean over
every supervised token of the batch (token-weighted, not a mean of per-sequence means).

Functions accept either a model (called on the batch) or a `Reference` (anything with its own
`sequence_logprob` / `logits` methods), so methods never special-case the frozen reference.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from unlearnkit.data.batch import IGNORE_INDEX, TokenBatch


def logits_of(model: Any, batch: TokenBatch) -> torch.Tensor:
    """(B, T, V) logits of `model` (or a Reference) on the batch."""
    if hasattr(model, "logits") and callable(model.logits):
        return model.logits(batch)
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def shifted_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for positions 0..T-2 and their mask: (B, T-1) each."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return targets.clamp(min=0), mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token target log-probs (B, T-1), zero where unsupervised, and the mask (B, T-1)."""
    targets, mask = shifted_labels(labels)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def supervised_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 logits that predict each supervised token, (N, V), and those tokens, (N,).

    Rows in batch order, positions left to right: two models' logits on one batch line up row for row.
    """
    targets, mask = shifted_labels(labels)
    return logits[:, :-1][mask].float(), targets[mask]


def sequence_logprob_from_logits(logits: torch.Tensor, labels: torch.Tensor, mean: bool = False) -> torch.Tensor:
    picked, mask = token_logprobs(logits, labels)
    total = picked.sum(-1)
    return total / mask.sum(-1).clamp(min=1) if mean else total


def sequence_logprob(model: Any, batch: TokenBatch, mean: bool = False) -> torch.Tensor:
    """(B,) summed (or per-token mean, `mean=True`) log-probability of each row's labels."""
    if hasattr(model, "sequence_logprob") and callable(model.sequence_logprob):
        return model.sequence_logprob(batch, mean=mean)
    return sequence_logprob_from_logits(logits_of(model, batch), batch.labels, mean=mean)


def nll_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    targets, mask = shifted_labels(labels)
    losses = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return (losses * mask.reshape(-1)).sum() / mask.sum().clamp(min=1)


def nll(model: Any, batch: TokenBatch) -> torch.Tensor:
    """Token-weighted mean negative log-likelihood over the batch's supervised tokens."""
    return nll_from_logits(logits_of(model, batch), batch.labels)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) per position, averaged over real (attended) positions.

    OpenUnlearning averages over every position including padding (batchmean over B·T);
    we exclude padding so the value does not depend on how a batch happens to be padded.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    per_position = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # (B, T)
    mask = attention_mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens and hidden dims of (a − b)²; a, b (B, T, d) (b may broadcast), mask (B, T).

    RMU's MSE is the mean over tokens and hidden dims; the mask keeps padding out of it.
    """
    m = mask.to(torch.float32).unsqueeze(-1)
    squared = (a.float() - b.float()) ** 2 * m
    return squared.sum() / (m.sum() * a.shape[-1]).clamp(min=1)


def kl_from_uniform(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(U ‖ π) with U uniform over the V-token vocabulary, averaged over the next-token positions where
    `mask` (B, T−1) is true (position t predicts token t + 1); logits (B, T, V).

    KL(U ‖ π) = −log V − (1/V)·Σ_v log π(v): 0 exactly when π is uniform, positive otherwise. Unlike
    KL(π ‖ U) = log V − H(π), its gradient in the logits (π − U) does not vanish as π nears one-hot.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    per_position = -math.log(logits.shape[-1]) - logp.mean(-1)  # (B, T-1)
    weights = mask.to(per_position.dtype)
    return (per_position * weights).sum() / weights.sum().clamp(min=1)
