"""Quantization probe: does unlearning survive rounding the weights to a k-bit grid?

Zhang et al. (2024, "Catastrophic failure of LLM unlearning via quantization") found that unlearned
models quantized to 4 bits often recover the forgotten knowledge, because unlearning moves the weights
by less than one quantization step. This probe simulates that ("fake quantization"): it rounds a COPY
of the model's weights to the grid and keeps them as floats, so the model runs unchanged everywhere.

For each weight matrix W (out × in) and each output channel (row) c, with k bits:

    scale_c = max_j |W_cj| / (2^(k−1) − 1)
    Q(W)_cj = scale_c · clamp(round(W_cj / scale_c), −(2^(k−1) − 1), 2^(k−1) − 1)

symmetric round-to-nearest (RTN), so |Q(W) − W| ≤ scale_c / 2 per element and each row takes at most
2^k − 1 distinct values. A row of zeros stays zero.

What is rounded:
* every `nn.Linear` weight of the model (attention and MLP projections, and `lm_head` unless its weight
  is tied to the input embeddings); biases stay in full precision, as in weight-only quantization;
* embeddings (`nn.Embedding`, and a tied `lm_head`) only with ``include_embeddings=True``;
* normalisation weights never (they are vectors, not channels of a matrix);
* GRUN's representation edits (the ``unlearn_edits`` submodule) only with ``include_edits=True``: they are
  a small adapter saved apart from the model's weights (`edits.safetensors`) and would be served in full
  precision next to a quantized base model, so the default quantizes the base model only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from unlearnkit.model.edits import ATTRIBUTE as EDITS_ATTRIBUTE

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)


def quantize_tensor(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rounded weight, per-row scale): symmetric per-output-channel round-to-nearest on `bits` bits."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS} (got {bits})")
    levels = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    flat = w.reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1) / levels  # (out,)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(1)
    q = torch.clamp(torch.round(flat / safe), -levels, levels) * safe
    q = torch.where(scale.unsqueeze(1) > 0, q, torch.zeros_like(q))
    return q.reshape(w.shape).to(weight.dtype), scale


def _edit_parameters(model: nn.Module) -> set[int]:
    return {id(p) for name, p in model.named_parameters() if EDITS_ATTRIBUTE in name.split(".")}


def quantize_model(model: nn.Module, bits: int, *, include_embeddings: bool = False,
                   include_edits: bool = False) -> nn.Module:
    """A deep copy of `model` with its weights rounded to `bits` bits (see the module docstring).

    The original model is not modified. Returns the copy (in eval mode)."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"quantize bits must be one of {SUPPORTED_BITS} (got {bits})")
    quantized = copy.deepcopy(model)
    edits = _edit_parameters(quantized)
    embedding_weights = {id(m.weight) for m in quantized.modules() if isinstance(m, nn.Embedding)}
    done: set[int] = set()
    with torch.no_grad():
        for module in quantized.modules():
            if not isinstance(module, (nn.Linear, nn.Embedding)):
                continue
            weight = module.weight
            if id(weight) in done:  # tied weights are rounded once
                continue
            if id(weight) in edits and not include_edits:
                continue
            if id(weight) in embedding_weights and not include_embeddings:
                continue
            rounded, _ = quantize_tensor(weight, bits)
            weight.copy_(rounded)
            done.add(id(weight))
    return quantized.eval()
