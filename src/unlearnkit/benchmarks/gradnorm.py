"""Per-sample gradient norms for the GradNorm membership-inference attack, many samples per backward.

For each sample, in train mode (as OpenUnlearning, so dropout, if any, is active):
L = −mean of the answer's token log-probs without the final labelled token (the EOS), and the score is the
mean over parameter tensors W of ‖∂L/∂W‖_p. Gradients never touch the parameters' ``.grad``; a frozen model
(no parameter requiring a gradient) has all its parameters differentiated for the pass.

For p = 2 (the default, OpenUnlearning's), `batch_size` samples share one forward and one backward to the
layers' outputs, and each sample's norms come from Gram matrices over its positions without any gradient
being formed (`ghost_norms`: linear layers, embeddings, tied tables and norm scales, exactly). Before the
first batch it checks itself against one backward on the first sample with a kept token, tensor by tensor, in
eval mode; a model it does not cover or a disagreement sends the pass to the paths below.

For other p the batched path takes `batch_size` samples per backward with ``torch.func``: ``vmap(grad(loss))`` over
padded samples, each with an explicit 4-D causal-and-padding attention mask (the model's own mask code has
data-dependent branches that vmap cannot trace). Per-sample gradients of every parameter are held for
one chunk, so the chunk is sized to the memory: `batch_size` samples, or fewer when
``samples × parameters × bytes`` would pass `max_bytes` (a quarter of the free accelerator memory by
default). It is used on a GPU, where it pays: on a CPU the attention kernels have no vmap rule and
torch loops them, so one backward per sample is as fast (measured: 36 s against 26 s for 800 TOFU rows on
a 5.5M model); pass `max_bytes` to force it. Models the batched path cannot trace (GRUN's representation
edits, older transformers releases, custom architectures) fall back, with the same numbers, to one
backward per sample.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from unlearnkit.benchmarks import ghost_norms
from unlearnkit.benchmarks.passes import model_device
from unlearnkit.data.batch import Example, collate
from unlearnkit.losses import logits_of, token_logprobs
from unlearnkit.metrics import mia
from unlearnkit.model.edits import edit_positions, has_edits
from unlearnkit.model.hooks import prompt_end_positions


def _trained(model: Any) -> tuple[list[tuple[str, torch.nn.Parameter]], list[torch.nn.Parameter]]:
    """(the parameters differentiated, those switched on for the pass)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if named:
        return named, []
    enabled = list(model.parameters())
    for param in enabled:
        param.requires_grad_(True)
    return list(model.named_parameters()), enabled


def _kept_positions(labels: torch.Tensor) -> torch.Tensor:
    """(…, T-1) float weights: the supervised positions, without the last one (the EOS)."""
    supervised = labels[..., 1:] != -100
    return (supervised & (supervised.long().cumsum(-1) < supervised.sum(-1, keepdim=True))).float()


def _one_by_one(model, examples, pad_id, named, p) -> np.ndarray:
    params = [param for _, param in named]
    device = model_device(model)
    scores = np.zeros(len(examples), dtype=np.float64)
    for index, example in enumerate(examples):
        batch = collate([example], pad_id).to(device)
        with edit_positions(model, prompt_end_positions(batch.labels)):
            picked, mask = token_logprobs(logits_of(model, batch), batch.labels)
        positions = mask[0].nonzero().flatten()[:-1]  # drop the final labelled token (EOS)
        if positions.numel() == 0:
            continue
        grads = torch.autograd.grad(-picked[0, positions].mean(), params, allow_unused=True)
        scores[index] = mia.gradnorm_score(grads, p=p)
    return scores


def _ghost_loss(model, batch):
    """() → (Σ over rows of the row's loss, rows): each row's mean negative log-prob over its kept positions, the
    float32 log-softmax taken at those positions only."""
    def loss_of():
        logits = logits_of(model, batch)
        weights = _kept_positions(batch.labels)
        rows, cols = weights.nonzero(as_tuple=True)
        targets = batch.labels[:, 1:][rows, cols]
        logp = torch.log_softmax(logits[:, :-1][rows, cols].float(), dim=-1).gather(-1, targets.unsqueeze(-1))
        return -(logp.squeeze(-1) / weights.sum(-1).clamp(min=1)[rows]).sum(), batch.input_ids.shape[0]
    return loss_of


def _ghost_agrees(model, example: Example, pad_id: int, params, modules) -> bool:
    """The ghost norms of `example` (one with a kept position) equal one backward's, tensor by tensor (eval mode:
    no dropout on either side)."""
    batch = collate([example], pad_id).to(model_device(model))
    was_training = model.training
    model.eval()
    try:
        ghost = ghost_norms.per_sample_norms(model, modules, params, _ghost_loss(model, batch))[:, 0]
        picked, mask = token_logprobs(logits_of(model, batch), batch.labels)
        positions = mask[0].nonzero().flatten()[:-1]
        grads = torch.autograd.grad(-picked[0, positions].mean(), params, allow_unused=True)
    finally:
        model.train(was_training)
    exact = torch.tensor([float("nan") if g is None else float(g.double().norm()) for g in grads], dtype=torch.float64)
    if not torch.equal(exact.isnan(), ghost.isnan()):
        return False
    reached = ~exact.isnan()
    tolerance = 1e-3 if params[0].dtype == torch.float32 else 5e-2
    floor = 1e-6 * float(exact[reached].mean()) if reached.any() else 0.0
    return bool(((ghost[reached] - exact[reached]).abs() <= tolerance * exact[reached] + floor).all())


def _ghost(model, examples, pad_id, named, chunk: int) -> np.ndarray | None:
    """p = 2 scores through `ghost_norms` (None where it does not cover the model or disagrees with autograd)."""
    params = [param for _, param in named]
    modules = ghost_norms.covered_modules(model, params)
    checked = next((e for e in examples if _kept_positions(torch.tensor([e.labels])).sum() > 0), None)
    if modules is None or (checked is not None and not _ghost_agrees(model, checked, pad_id, params, modules)):
        return None
    device = model_device(model)
    scores = np.zeros(len(examples), dtype=np.float64)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))  # little padding per batch
    for start in range(0, len(examples), chunk):
        indices = order[start:start + chunk]
        batch = collate([examples[i] for i in indices], pad_id).to(device)
        norms = ghost_norms.per_sample_norms(model, modules, params, _ghost_loss(model, batch))  # (P, B)
        reached = norms[~norms.isnan().all(1)]
        empty = (_kept_positions(batch.labels).sum(-1) == 0).cpu()  # no token left: 0, as one by one
        scores[indices] = torch.where(empty, 0.0, reached.mean(0)).numpy()
    return scores


def _chunk(model, named, batch_size: int, max_bytes: int | None) -> int:
    per_sample = sum(param.numel() * param.element_size() for _, param in named)
    if max_bytes is None:
        device = model_device(model)
        max_bytes = (torch.cuda.mem_get_info(device)[0] // 4) if device.type == "cuda" else 1 << 30
    return max(1, min(batch_size, max_bytes // max(per_sample, 1)))


def _batched(model, examples, pad_id, named, p, chunk: int) -> np.ndarray:
    from torch.func import functional_call, grad, vmap

    device = model_device(model)
    used = _used_parameters(model, examples[0], pad_id, named)
    params = {n: param.detach() for n, param in named}

    def loss(values, ids, labels, mask):
        length = ids.shape[0]
        allowed = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril() & mask.bool().unsqueeze(0)
        out = functional_call(model, values, (ids.unsqueeze(0),), {"attention_mask": allowed[None, None]})
        logp = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)
        picked = logp.gather(-1, labels[1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
        weights = _kept_positions(labels)
        return -(picked * weights).sum() / weights.sum().clamp(min=1)

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0, 0), randomness="different")
    scores = np.zeros(len(examples), dtype=np.float64)
    for start in range(0, len(examples), chunk):
        batch = collate(examples[start:start + chunk], pad_id).to(device)
        with warnings.catch_warnings():  # some attention kernels have no vmap rule yet: torch loops them
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            grads = per_sample(params, batch.input_ids, batch.labels, batch.attention_mask)
        norms = torch.stack([torch.linalg.vector_norm(grads[n].flatten(1).double(), ord=p, dim=1) for n in used])
        empty = _kept_positions(batch.labels).sum(-1) == 0  # no token left: 0, as one by one
        scores[start:start + chunk] = torch.where(empty, 0.0, norms.mean(0)).cpu().numpy()
        del grads
    return scores


def _used_parameters(model, example: Example, pad_id: int, named) -> list[str]:
    """The parameters the loss depends on (autograd's allow_unused: the others are left out of the mean)."""
    batch = collate([example], pad_id).to(model_device(model))
    picked, _ = token_logprobs(logits_of(model, batch), batch.labels)
    grads = torch.autograd.grad(-picked.sum(), [param for _, param in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is not None]


def gradnorm_scores(model: Any, examples: list[Example], pad_id: int, p: float = 2.0, batch_size: int = 8,
                    max_bytes: int | None = None) -> np.ndarray:
    """(N,) GradNorm scores of `examples`, in their order (see the module docstring)."""
    if not examples:
        return np.zeros(0, dtype=np.float64)
    named, enabled = _trained(model)
    was_training = model.training
    try:
        model.train()
        with torch.enable_grad():
            if p == 2 and batch_size > 1 and not has_edits(model):
                try:
                    ghost = _ghost(model, examples, pad_id, named, batch_size)
                except (RuntimeError, ValueError):  # e.g. an in-place op on a layer's output
                    ghost = None
                if ghost is not None:
                    return ghost
            chunk = _chunk(model, named, batch_size, max_bytes)
            batched = batch_size > 1 and (model_device(model).type == "cuda" or max_bytes is not None)
            if batched and chunk > 1 and not has_edits(model):
                try:
                    return _batched(model, examples, pad_id, named, p, chunk)
                except (RuntimeError, TypeError, ValueError, NotImplementedError):
                    pass  # not traceable by torch.func here: one backward per sample gives the same numbers
            return _one_by_one(model, examples, pad_id, named, p)
    finally:
        model.train(was_training)
        for param in enabled:
            param.requires_grad_(False)
