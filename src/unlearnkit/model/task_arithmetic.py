"""Task arithmetic on model weights (Ilharco et al., 2023, "Editing Models with Task Arithmetic").

With θ0 the weights before a fine-tune and θ_ft after it, the task vector is τ = θ_ft − θ0, taken
over floating-point tensors only (integer and bool buffers — counters, masks, position ids — are
not weights and are left alone). Negation moves the model the other way:

    θ = θ0 − α·τ = (1 + α)·θ0 − α·θ_ft

`negate_in_place` writes that into the fine-tuned model tensor by tensor, so the only extra copy
ever held is the θ0 snapshot (kept on the CPU by default, off the accelerator); τ itself is never
materialised. α = 0 gives θ0 exactly, α = 1 gives 2θ0 − θ_ft, α = −1 gives θ_ft back.

LoRA: for a peft model the snapshot holds only the base weights under the adapters (named as they
will be after `models.merge_lora`), because merging changes nothing else. After training and
merging, the same `negate_in_place` call applies to the plain merged model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unlearnkit.train.reference import is_peft_model


def float_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's floating-point parameters and buffers by name (live tensors, shared ones once)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and id(tensor) not in seen:
            seen.add(id(tensor))
            out[name] = tensor
    return out


def _merged_name(name: str) -> str:
    """A peft base-layer tensor's name once the adapters are merged: 'q_proj.base_layer.weight' -> 'q_proj.weight'."""
    return name.replace(".base_layer.", ".")


def snapshot(model: nn.Module, device: str | torch.device | None = "cpu") -> dict[str, torch.Tensor]:
    """θ0: detached copies of the float tensors a fine-tune can change (on `device`; None: in place).

    Plain model: every float tensor. peft model: only the weights under LoRA adapters, named as in
    the merged model (everything else is frozen during training and unchanged by the merge).
    """
    if is_peft_model(model):
        tensors = {_merged_name(n): t for n, t in float_tensors(model.get_base_model()).items()
                   if ".base_layer." in n}
    else:
        tensors = float_tensors(model)
    return {n: t.detach().to(device, copy=True) if device is not None else t.detach().clone()
            for n, t in tensors.items()}


def _matched(model: nn.Module, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    current = float_tensors(model)
    missing = sorted(set(base) - set(current))
    assert not missing, f"the snapshot names tensors the model does not have: {missing[:5]}"
    return {n: current[n] for n in base}


def task_vector(model: nn.Module, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """τ = θ − θ0 for every tensor in the snapshot (fp32, on the snapshot's device)."""
    return {n: t.detach().to(base[n].device, torch.float32) - base[n].float()
            for n, t in _matched(model, base).items()}


@torch.no_grad()
def negate_in_place(model: nn.Module, base: dict[str, torch.Tensor], alpha: float) -> nn.Module:
    """Set θ ← θ0 − α·(θ − θ0) = (1 + α)·θ0 − α·θ for the snapshot's tensors; returns `model`.

    Computed in fp32 one tensor at a time (one temporary the size of the largest tensor) and cast
    back to each tensor's dtype. Tensors outside the snapshot (integer buffers, weights LoRA did
    not touch) keep their values.
    """
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    for name, tensor in _matched(model, base).items():
        edited = base[name].to(tensor.device, torch.float32).mul(1 + alpha)
        edited.sub_(tensor.float(), alpha=alpha)
        tensor.copy_(edited)
    return model
