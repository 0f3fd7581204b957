"""DeepSpeed ZeRO-2 / ZeRO-3 under the one trainer: its config, its consolidated weights, and checkpoints in
unlearnkit's own format (safetensors, by parameter name) — never DeepSpeed's pickled ones.

* `configure`: the engine's batch size, clipping and accumulation come from the recipe. The trainer marks the
  accumulation boundary itself on the step's last backward (`engine.set_gradient_accumulation_boundary`), so
  DeepSpeed's `gradient_accumulation_steps` is 1 and each term is backpropagated through `engine.backward`.
* `gather_state` / `load_state`: the full fp32 weights and AdamW moments of every trained parameter, assembled from
  the ZeRO partitions with DeepSpeed's public `safe_get_full_*` / `safe_set_full_*` (every rank takes part), in
  the layout `checkpoint.save_checkpoint` writes for the other strategies, plus AdamW's step count (`__engine__`).
* `consolidate`: full weights on every rank (ZeRO-3: gathered) copied into a plain module for evaluation.
"""

from __future__ import annotations

import torch
from torch import nn


def is_engine(model) -> bool:
    return hasattr(model, "zero_optimization_stage") and hasattr(model, "set_gradient_accumulation_boundary")


def configure(accelerator, batch_size: int, processes: int, max_grad_norm: float | None) -> None:
    """Fill the DeepSpeed config with the recipe's settings (before `accelerator.prepare`)."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = batch_size
    config["gradient_accumulation_steps"] = 1
    config["train_batch_size"] = batch_size * processes
    config["gradient_clipping"] = float(max_grad_norm or 0.0)
    config.setdefault("zero_optimization", {})["stage3_gather_16bit_weights_on_model_save"] = True
    config["zero_allow_untested_optimizer"] = True  # the trainer's torch AdamW, partitioned by ZeRO


def _full_params(engine):
    """Context: every parameter whole on every rank (ZeRO-3 gathers them; ZeRO-2 holds them whole)."""
    import contextlib

    if engine.zero_optimization_stage() < 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)


def gather_state(engine, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, optimizer state) like `checkpoint.gather_state`'s: full CPU tensors by parameter name."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    with _full_params(engine):
        weights = {name: p.detach().cpu().clone() for name, p in engine.module.state_dict(keep_vars=True).items()}
    state: dict[str, dict[str, torch.Tensor]] = {}
    for name, param in engine.module.named_parameters():
        if not param.requires_grad:
            continue
        weights[name] = safe_get_full_fp32_param(param).detach().cpu()
        state[name] = {key: safe_get_full_optimizer_state(param, key).detach().cpu()
                       for key in ("exp_avg", "exp_avg_sq")}
    groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    steps = [values["step"] for values in engine.optimizer.optimizer.state.values() if "step" in values]
    if steps:  # AdamW's own count over ZeRO's flat partitions (the same for all of them)
        state["__engine__"] = {"step": torch.as_tensor(steps[0]).detach().cpu().reshape(1)}
    return weights, {"state": state, "param_groups": groups}


def load_state(engine, weights: dict[str, torch.Tensor], state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Put a checkpoint's trained weights and AdamW moments back into the ZeRO partitions (every rank).

    Before the first step AdamW has no state and ZeRO has not linked the parameters to it; both are made here
    (AdamW's state as torch creates it, over ZeRO's flat fp32 partitions; ZeRO-1/2's link `_lazy_init_...`)."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    inner = engine.optimizer.optimizer  # the trainer's AdamW over ZeRO's flat partitions
    flats = [flat for group in inner.param_groups for flat in group["params"]]
    flats += list(getattr(engine.optimizer, "fp32_partitioned_groups_flat", []))  # ZeRO-3 keys its state by these
    for flat in flats:
        if not inner.state.get(flat):
            inner.state[flat] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(flat),
                                 "exp_avg_sq": torch.zeros_like(flat)}
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:
        engine.optimizer._hp_optimizer_states_linked = False
        link()
    _write_module_weights(engine, weights)
    for name, param in engine.module.named_parameters():
        if name in weights:
            safe_set_full_fp32_param(param, weights[name].to(torch.float32))
        for key, value in state.get(name, {}).items():
            if key in ("exp_avg", "exp_avg_sq"):
                safe_set_full_optimizer_state(param, value.to(torch.float32), key)
    saved = state.get("__engine__", {}).get("step")
    for values in inner.state.values():
        if "step" in values and saved is not None:
            values["step"] = torch.as_tensor(values["step"]).new_tensor(float(saved.reshape(-1)[0]))


def _write_module_weights(engine, weights: dict[str, torch.Tensor]) -> None:
    """The weights the forward uses (ZeRO-2: whole on every rank; ZeRO-3: rank 0's copy, re-partitioned on exit)."""
    named = [(name, p) for name, p in engine.module.named_parameters() if name in weights]
    if engine.zero_optimization_stage() < 3:
        with torch.no_grad():
            for name, p in named:
                p.copy_(weights[name].to(p.dtype))
        return
    import deepspeed
    import torch.distributed as dist

    with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=0), torch.no_grad():
        if dist.get_rank() == 0:
            for name, p in named:
                p.copy_(weights[name].to(p.dtype))


def consolidate(engine, skeleton: nn.Module, device) -> nn.Module:
    """The trained weights (whole on every rank) loaded into `skeleton`, a plain module, on `device`."""
    with _full_params(engine):
        full = {name: p.detach().clone() for name, p in engine.module.state_dict(keep_vars=True).items()}
    skeleton.load_state_dict(full, strict=False, assign=True)
    if hasattr(skeleton, "tie_weights"):
        skeleton.tie_weights()
    return skeleton.to(device)
