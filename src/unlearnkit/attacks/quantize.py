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

``scheme="nf4"`` rounds each block of 64 consecutive weights (per row) to the 4-bit NormalFloat codebook of
QLoRA (Dettmers et al., 2023): the block's absmax scales it to [−1, 1], and every value goes to the nearest of the
16 levels (quantiles of N(0, 1), with an exact 0; `nf4_levels`). With a CUDA device and bitsandbytes installed
the rounding is bitsandbytes' own (`quantize_4bit` / `dequantize_4bit`, the kernels a served NF4 model uses);
otherwise the same codebook and block size in torch (a simulation: bitsandbytes also stores its absmax in
8 bits, which this does not).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from unlearnkit.attacks.base import Attack, AttackRow, AttackTarget
from unlearnkit.errors import UnlearnError
from unlearnkit.model.edits import ATTRIBUTE as EDITS_ATTRIBUTE
from unlearnkit.registry import ATTACKS

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)
NF4_BLOCK = 64
NF4_OFFSET = 0.9677083  # QLoRA's: the outermost quantile, (1 − 1/(2·15) + 1 − 1/(2·16)) / 2


def nf4_levels() -> torch.Tensor:
    """The 16 NormalFloat-4 levels in [−1, 1]: 8 positive and 7 negative normal quantiles, and 0."""
    from scipy.stats import norm

    positive = norm.ppf(torch.linspace(NF4_OFFSET, 0.5, 9)[:-1].double().numpy())
    negative = -norm.ppf(torch.linspace(NF4_OFFSET, 0.5, 8)[:-1].double().numpy())
    levels = torch.tensor(sorted([*positive, 0.0, *negative]), dtype=torch.float64)
    return (levels / levels.abs().max()).float()


def nf4_tensor(weight: torch.Tensor) -> torch.Tensor:
    """`weight` rounded to NF4 in blocks of NF4_BLOCK values (bitsandbytes' kernels on CUDA when installed)."""
    if weight.is_cuda:
        try:
            import bitsandbytes.functional as bnbf
        except ImportError:
            bnbf = None
        if bnbf is not None:
            packed, state = bnbf.quantize_4bit(weight.detach().contiguous(), blocksize=NF4_BLOCK, quant_type="nf4")
            return bnbf.dequantize_4bit(packed, state).to(weight.dtype).reshape(weight.shape)
    w = weight.detach().float().reshape(-1)
    pad = (-len(w)) % NF4_BLOCK
    blocks = torch.cat([w, w.new_zeros(pad)]).reshape(-1, NF4_BLOCK)
    scale = blocks.abs().amax(dim=1, keepdim=True)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    levels = nf4_levels().to(w.device)
    nearest = (blocks / safe).unsqueeze(-1).sub(levels).abs().argmin(-1)
    rounded = (levels[nearest] * scale).reshape(-1)[: len(w)]
    return rounded.reshape(weight.shape).to(weight.dtype)


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
                   include_edits: bool = False, scheme: str = "rtn") -> nn.Module:
    """A deep copy of `model` with its weights rounded to `bits` bits (see the module docstring); `scheme` "rtn"
    (per-channel round-to-nearest, any bits) or "nf4" (NormalFloat 4-bit blocks).

    The original model is not modified. Returns the copy (in eval mode)."""
    if scheme == "nf4" and bits != 4:
        raise ValueError(f"the nf4 scheme has 4 bits (got {bits})")
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
            weight.copy_(nf4_tensor(weight) if scheme == "nf4" else quantize_tensor(weight, bits)[0])
            done.add(id(weight))
    return quantized.eval()


@ATTACKS.register("quantize")
@dataclass
class Quantize(Attack):
    """Quantization: round a copy's weights to k bits (per-channel RTN, or NF4 blocks) and re-measure."""

    bits: list[int] = field(default_factory=lambda: [8, 4])  # one row per width
    scheme: str = "rtn"  # rtn: per-channel round-to-nearest; nf4: NormalFloat-4 blocks of 64 (bits [4])
    include_embeddings: bool = False
    include_edits: bool = False  # GRUN's edits are a separate full-precision adapter by default
    cheap: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.bits:
            raise UnlearnError("attacks.quantize.bits is empty; name widths such as [8, 4], or turn the attack off"
                               " with attacks.quantize=false")
        bad = [b for b in self.bits if b not in SUPPORTED_BITS]
        if bad:
            raise UnlearnError("attacks.quantize.bits must hold bit widths between 2 and 8, such as [8, 4]"
                               f" (not {bad})")
        if self.scheme not in ("rtn", "nf4"):
            raise UnlearnError(f"attacks.quantize.scheme must be rtn or nf4, not '{self.scheme}'")
        if self.scheme == "nf4" and self.bits != [4]:
            raise UnlearnError("attacks.quantize.scheme=nf4 has 4 bits: set attacks.quantize.bits=[4]")
        self.bits = list(dict.fromkeys(self.bits))

    def run(self, target: AttackTarget) -> list[AttackRow]:
        rows = []
        for bits in self.bits:
            target.log(f"quantization attack: {bits}-bit weights ({self.scheme})")
            quantized = quantize_model(target.model, bits, include_embeddings=self.include_embeddings,
                                       include_edits=self.include_edits, scheme=self.scheme)
            metrics = target.measure(quantized, target.bench)
            del quantized
            how = "NF4, blocks of 64" if self.scheme == "nf4" else "RTN, per channel"
            rows.append(AttackRow(f"{bits}-bit weights ({how})", metrics, {**self.settings(), "bits": bits}))
        return rows
