"""The retain term shared by retain-regularised methods: NLL on retain data, or KL to the reference.

    nll: CE_θ(B_retain)                         (token-weighted mean, as in HF / OpenUnlearning)
    kl:  mean over real positions of KL(π_ref(·|ctx) ‖ π_θ(·|ctx)) on B_retain
"""

from __future__ import annotations

import torch

from unlearnkit.errors import UnlearnError
from unlearnkit.losses import kl_to_reference, logits_of, nll

RETAIN_LOSSES = ("nll", "kl")


def check_retain_loss(kind: str) -> None:
    if kind not in RETAIN_LOSSES:
        raise UnlearnError(f"retain_loss must be one of {', '.join(RETAIN_LOSSES)}, got '{kind}'")


def retain_term(kind: str, model, batch, ref) -> torch.Tensor:
    """The retain loss on `batch.retain`, or 0 when the batch has no retain part."""
    if batch.retain is None:
        return batch.forget.input_ids.new_zeros((), dtype=torch.float32)
    if kind == "kl":
        return kl_to_reference(logits_of(model, batch.retain), ref.logits(batch.retain),
                               batch.retain.attention_mask)
    return nll(model, batch.retain)
