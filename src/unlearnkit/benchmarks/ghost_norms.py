"""Per-sample gradient 2-norms of every parameter tensor from one batched backward, without forming the gradients.

The gradient of a sample's loss with respect to a linear layer's weight W (out × in) is a sum over its
positions, G = Σ_t g_t x_tᵀ, where x_t is the layer's input and g_t the loss's gradient with respect to its
output at position t. Its squared Frobenius norm needs only the two Gram matrices over positions:

    ‖G‖² = Σ_{t,s} (g_t · g_s)(x_t · x_s)

— O(T²·(in + out)) per sample instead of O(T·in·out) memory for G itself (the "ghost norm" of
per-sample-gradient clipping; exact, not an estimate). Rows of a batch never interact in a causal LM, so
the gradient of the batch's summed per-sample losses with respect to a layer's outputs is, row by row,
each sample's own g_t: one forward and one backward to the layers' outputs (no weight gradients at all)
give every sample's norms. The same form covers

* a bias: G = Σ_t g_t · 1 (x_t is the constant 1);
* an embedding table: G = Σ_t onehot(id_t) g_tᵀ (x_t · x_s becomes [id_t = id_s]; the padding_idx row
  gets no gradient, as in `torch.nn.functional.embedding`);
* a tensor that several modules share (tied input and output embeddings): G is the sum of their terms and
  ‖G‖² = Σ_{i,j} ⟨G_i, G_j⟩, each cross term again a sum over position pairs;
* an elementwise scale (RMSNorm, LayerNorm weights): G = Σ_t g_t ⊙ f_t with f_t the normalised input,
  read from the module itself as M(x; w=1) − M(x; w=0), small enough to form per sample.

A model with any other parameter that needs a gradient (a convolution, a custom layer) is not covered:
`per_sample_norms` returns None and the caller falls back to another path. Products run in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class _Call:
    """One call of a covered module during the forward: what its gradient needs."""

    module: nn.Module
    kind: str  # linear | embedding | scale
    inputs: torch.Tensor  # detached: the layer input (linear, scale) or the token ids (embedding)
    output: torch.Tensor | None  # in the graph: the loss's gradient with respect to it is g (dropped once taken)


def _scale_like(module: nn.Module) -> bool:
    """A module whose only parameters are its own 1-D `weight` (and 1-D `bias`): a norm's elementwise affine."""
    own = dict(module.named_parameters(recurse=False))
    if "weight" not in own or set(own) - {"weight", "bias"} or any(p.dim() != 1 for p in own.values()):
        return False
    return not any(True for child in module.children() for _ in child.parameters())


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        plain = module.max_norm is None and not module.scale_grad_by_freq and not module.sparse
        return "embedding" if plain else None
    return "scale" if _scale_like(module) else None


def covered_modules(model: nn.Module, params: list[nn.Parameter]) -> list[tuple[nn.Module, str]] | None:
    """The modules whose calls give the gradients of `params` (None if some parameter is owned by a module of
    another kind, or is shared between a scale and a matrix)."""
    wanted = {id(p) for p in params}
    modules, owned = [], {}
    for module in model.modules():
        mine = [p for p in module.parameters(recurse=False) if id(p) in wanted]
        if not mine:
            continue
        kind = _kind(module)
        if kind is None:
            return None
        modules.append((module, kind))
        for param in mine:
            owned.setdefault(id(param), set()).add("scale" if kind == "scale" else "matrix")
    if set(owned) != wanted or any(len(kinds) > 1 for kinds in owned.values()):
        return None
    return modules


def _gram(a: tuple[str, torch.Tensor, int], b: tuple[str, torch.Tensor, int]) -> torch.Tensor:
    """(B, Ta, Tb) dot products between two factor sequences: 'dense' (B, T, D) vectors or 'ids' (B, T) one-hots."""
    (kind_a, ta, _), (kind_b, tb, _) = a, b
    if kind_a == "dense" and kind_b == "dense":
        return torch.bmm(ta, tb.transpose(1, 2))
    if kind_a == "ids" and kind_b == "ids":
        return (ta.unsqueeze(2) == tb.unsqueeze(1)).float()
    if kind_a == "dense":
        return _gram(b, a).transpose(1, 2)
    index = ta.unsqueeze(2).expand(-1, -1, tb.shape[1])  # (B, Ta, Tb): dense_b[b, s, id_a[b, t]]
    return torch.gather(tb.transpose(1, 2), 1, index)


def _factors(call: _Call, grad: torch.Tensor, param_name: str) -> tuple[tuple, tuple]:
    """(left, right) factors with G = Σ_t left_t right_tᵀ for `call`'s parameter `param_name`."""
    rows = grad.shape[0]
    g = grad.reshape(rows, -1, grad.shape[-1]).float()
    if call.kind == "embedding":
        ids = call.inputs.reshape(rows, -1)
        if call.module.padding_idx is not None:  # that row of the table gets no gradient
            g = g * (ids != call.module.padding_idx).unsqueeze(-1)
        return ("ids", ids, call.module.num_embeddings), ("dense", g, g.shape[-1])
    if param_name == "bias":
        return ("dense", g, g.shape[-1]), ("dense", g.new_ones(rows, g.shape[1], 1), 1)
    x = call.inputs.reshape(rows, -1, call.inputs.shape[-1]).float()
    return ("dense", g, g.shape[-1]), ("dense", x, x.shape[-1])


def _normalised(call: _Call) -> torch.Tensor:
    """f with M(x) = f ⊙ w (+ b): the module at w = 1 minus the module at w = 0, biases 0."""
    from torch.func import functional_call

    weight = call.module.weight
    values = {name: torch.zeros_like(p) for name, p in call.module.named_parameters(recurse=False)}
    with torch.no_grad():
        at_zero = functional_call(call.module, values, (call.inputs,))
        values["weight"] = torch.ones_like(weight)
        return (functional_call(call.module, values, (call.inputs,)) - at_zero).float()


def per_sample_norms(model: nn.Module, modules: list[tuple[nn.Module, str]], params: list[nn.Parameter],
                     loss_of: Any) -> torch.Tensor:
    """(len(params), B) gradient 2-norms of each sample's loss, NaN for a parameter the loss does not reach.

    `loss_of()` runs the forward on a batch and returns (the sum of its B samples' losses, B); `modules` is
    `covered_modules(model, params)`. Raises ValueError for a module called in a way this does not read."""
    calls: list[_Call] = []
    unread: list[nn.Module] = []

    def record(kind):
        def hook(module, args, output):
            if not (torch.is_tensor(output) and output.requires_grad):
                return
            if not args or not torch.is_tensor(args[0]):
                unread.append(module)
            else:
                calls.append(_Call(module, kind, args[0].detach(), output))
        return hook

    handles = [module.register_forward_hook(record(kind)) for module, kind in modules]
    try:
        loss, rows = loss_of()
    finally:
        for handle in handles:
            handle.remove()
    if unread:
        raise ValueError(f"{type(unread[0]).__name__} was called without a positional input tensor")
    grads = torch.autograd.grad(loss, [c.output for c in calls], allow_unused=True) if calls else []
    for call in calls:  # only g and the inputs are read from here on
        call.output = None
    index = {id(p): i for i, p in enumerate(params)}
    uses: dict[int, list[tuple[_Call, torch.Tensor, str]]] = {}  # per parameter, the calls that reached it
    for call, grad in zip(calls, grads):
        if grad is not None:
            for name, param in call.module.named_parameters(recurse=False):
                if id(param) in index:
                    uses.setdefault(id(param), []).append((call, grad, name))
    norms = torch.full((len(params), rows), float("nan"), dtype=torch.float64)
    for key, entries in uses.items():  # float32 factors for one parameter at a time: memory of one layer
        norms[index[key]] = (_vector_norm(entries, rows) if entries[0][0].kind == "scale"
                             else _matrix_norm(entries, rows)).cpu()
    return norms


def _vector_norm(entries: list[tuple[_Call, torch.Tensor, str]], rows: int) -> torch.Tensor:
    """(B,) ‖Σ_t g_t ⊙ f_t‖ (a scale's weight) or ‖Σ_t g_t‖ (its bias), summed over the calls first."""
    total: torch.Tensor | int = 0
    for call, grad, name in entries:
        g = grad.reshape(rows, -1, grad.shape[-1]).float()
        total = total + ((g * _normalised(call).reshape(g.shape)).sum(1) if name == "weight" else g.sum(1))
    return torch.linalg.vector_norm(total.double(), dim=-1)


def _matrix_norm(entries: list[tuple[_Call, torch.Tensor, str]], rows: int) -> torch.Tensor:
    """(B,) ‖Σ_calls Σ_t left_t right_tᵀ‖_F from Gram matrices, cross terms between calls included."""
    terms = [_factors(call, grad, name) for call, grad, name in entries]
    squared = torch.zeros(rows, dtype=torch.float32, device=terms[0][0][1].device)
    for i, (left_i, right_i) in enumerate(terms):
        for j in range(i, len(terms)):
            left_j, right_j = terms[j]
            cross = (_gram(left_i, left_j) * _gram(right_i, right_j)).sum((1, 2))
            squared += cross if i == j else 2 * cross
    return squared.double().clamp(min=0).sqrt()
