"""Sharpness-aware unlearning (`train.sam_rho`): the forget term's gradient taken at an ascent point.

Fan et al., 2025, "Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware Minimization
Perspective and Beyond" (arXiv:2502.05374). With g_f = ∇L_f(θ), the step's gradient is

    g = ∇L_f(θ + ρ · g_f / ‖g_f‖) + ∇L_r(θ)

so the forget loss is minimised where it is flat: a few relearning steps then climb it less. ρ = 0 is the plain
step. The forget term is a method's first loss term (every `RetainRegularised` method's forget term; the whole
loss of a single-term method). It costs one more forward and backward of that term per step.

Under DDP / FSDP2 the first backward is synchronised (g_f averaged over ranks, sharded under FSDP2, with the
norm over all shards), so every rank takes the same ascent step and 2 processes train what 1 process trains.
A method's own state (an RNG, a call counter) sees the forget term computed twice per step.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from unlearnkit.methods.base import LossOutput


def ascent_backward(run: Callable[[Callable[[], LossOutput], bool], LossOutput], term: Callable[[], LossOutput],
                    params: list[nn.Parameter], rho: float, sync: bool) -> LossOutput:
    """Backpropagate `term` at θ + ρ·g/‖g‖ (g its own gradient at θ) and restore θ; returns the term at θ.

    `run(term, sync)` computes and backpropagates a term (with gradient sync when `sync`); `params` are the trained
    parameters and must have no gradient yet this step."""
    first = run(term, True)  # g_f at θ, averaged over ranks by the engine
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    scale = rho / (float(norm) + 1e-12)
    shifts: list[torch.Tensor | None] = []
    with torch.no_grad():
        for p in params:
            shift = None if p.grad is None else p.grad * scale
            if shift is not None:
                p.add_(shift)
            shifts.append(shift)
            p.grad = None
    run(term, sync)  # the gradient at the ascent point
    with torch.no_grad():
        for p, shift in zip(params, shifts):
            if shift is not None:
                p.sub_(shift)
    return first
