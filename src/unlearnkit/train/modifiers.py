"""Modifiers for any objective: sharpness-aware unlearning (`train.sam_rho`), gradient rectification
(`train.gru`) and saliency-based selection of what trains (`train.sure_percentile`, `salient`). Both act on the forget term (a method's first loss term) and need
`train.grad_accum: 1`; under DDP / FSDP2 the forget term's backward is synchronised, so every rank modifies the
same global gradients; DeepSpeed refuses them (its engine holds the gradients).

SAM (`train.sam_rho`): the forget term's gradient taken at an ascent point.

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


def check_modifiers(cfg, strategy, method) -> None:
    """Refuse, in one line, a modifier the run cannot apply."""
    from unlearnkit.errors import UnlearnError

    wanted = [name for name, on in (("train.sam_rho", cfg.sam_rho), ("train.gru", cfg.gru)) if on]
    if not wanted:
        return
    if cfg.grad_accum > 1 or strategy.name == "deepspeed":
        raise UnlearnError(f"{wanted[0]} needs train.grad_accum=1 and a strategy other than DeepSpeed (one process, DDP"
                           " or FSDP2); raise train.batch_size instead of grad_accum")
    if cfg.gru and not method.needs_retain():
        raise UnlearnError(f"train.gru rectifies the forget gradient against the retain gradient, and"
                           f" {getattr(method, 'registry_name', type(method).__name__)} has no retain term; use a"
                           " method with one (grad_diff, npo, simnpo, ...) or set train.gru=false")


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


def rectify(params: list[nn.Parameter], forget: list[torch.Tensor | None]) -> float:
    """GRU (gradient rectification, `train.gru`): with g_f = `forget` (the forget term's gradient) and the
    parameters' gradients now g_f + g_r, remove from g_f its component along g_r when the two conflict:

        g_f ← g_f − min(0, g_f·g_r) / ‖g_r‖² · g_r

    so the step never increases the retain loss to first order (Wang et al., 2025, "GRU: Mitigating the Trade-off
    between Unlearning and Retention for LLMs", arXiv:2503.09117: the projection in its simplest, per-step form).
    Returns g_f·g_r (negative: there was a conflict)."""
    pairs = [(p, f) for p, f in zip(params, forget) if p.grad is not None]
    retain = [p.grad - (f if f is not None else 0) for p, f in pairs]
    dot = sum(((f if f is not None else torch.zeros_like(r)) * r).sum() for (_, f), r in zip(pairs, retain))
    norm2 = sum((r * r).sum() for r in retain)
    dot, norm2 = (float(x.full_tensor() if hasattr(x, "full_tensor") else x) for x in (dot, norm2))
    if dot < 0 and norm2 > 0:
        with torch.no_grad():
            for (p, _), r in zip(pairs, retain):
                p.grad.sub_(r * (dot / norm2))
    return dot


def salient(model: nn.Module, params: list[nn.Parameter], forget: list, pad_id: int, percentile: float,
            rows: int = 32, chunk: int = 4) -> list[nn.Parameter]:
    """SURE (`train.sure_percentile`): the parameters among `params` whose forget-gradient norm is at or above the
    `percentile`-th percentile; the trainer freezes the rest.

    The saliency of a weight tensor is the Frobenius norm of the gradient of the forget NLL (the answer tokens of
    the first `rows` forget examples, in data order: every rank selects the same tensors) at the starting model —
    the NLL rather than the method's own forget loss, so it is defined before any reference exists and is the same
    for every objective (taken `chunk` rows per backward, so a large model holds one chunk's activations) (SURE, Zhang et al., 2025, scores modules by the forget gradient; [P] the choice of loss
    and of whole tensors as the unit is ours). At least one tensor is kept."""
    from unlearnkit.data.batch import collate
    from unlearnkit.losses import nll

    device = next(model.parameters()).device
    chosen = forget[:rows]
    total: list[torch.Tensor | None] = [None] * len(params)
    for start in range(0, len(chosen), chunk):  # a few rows per backward: the activations of one chunk at a time
        part = chosen[start:start + chunk]
        batch = collate(part, pad_id).to(device)
        weight = len(part) / len(chosen)  # the chunks' token means, weighted by rows
        for i, g in enumerate(torch.autograd.grad(nll(model, batch) * weight, params, allow_unused=True)):
            if g is not None:
                total[i] = g.detach() if total[i] is None else total[i] + g.detach()
    scores = torch.stack([torch.zeros(()) if g is None else g.float().norm().cpu() for g in total])
    threshold = torch.quantile(scores, percentile / 100.0)
    keep = [p for p, s in zip(params, scores) if s >= threshold and s > 0]
    return keep or [params[int(scores.argmax())]]


def salient_groups(model: nn.Module, groups: list[dict], data, percentile: float) -> list[dict]:
    """Optimizer `groups` keeping only the tensors `salient` selects (empty groups dropped)."""
    kept = {id(p) for p in salient(model, [p for g in groups for p in g["params"]], data.forget, data.pad_id, percentile)}
    groups = [{**g, "params": [p for p in g["params"] if id(p) in kept]} for g in groups]
    return [g for g in groups if g["params"]]
