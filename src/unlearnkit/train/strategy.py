"""How training is spread over processes — chosen by `accelerate launch`, run by the engines accelerate drives.

unlearnkit writes no distributed runtime. `accelerate launch --config_file configs/accelerate/X.yaml -m
unlearnkit.cli run ...` sets environment variables that `accelerate.Accelerator` reads; this module builds
that Accelerator and names the strategy it chose, so the trainer knows what composes with it:

| strategy | who synchronises gradients | the step's backward passes | a frozen reference copy |
|---|---|---|---|
| `single` | nobody | one per loss term (peak memory = the largest term's) | plain copy |
| `ddp` | DDP's buckets, overlapped with the last backward of the step | one per term; all but the last under `no_sync` | plain copy on each rank |
| `fsdp2` | FSDP2's reduce-scatter, on the last backward of the step | one per term; all but the last with gradient sync off | sharded like the model (`fully_shard`) |
| `deepspeed` (ZeRO-2 / ZeRO-3) | the DeepSpeed engine, at the accumulation boundary the trainer marks on the step's last backward | one per term, through the engine (`engine.backward`); the engine steps (clips, skips a non-finite step) | ZeRO-2: plain copy; ZeRO-3: refused (use FSDP2 or LoRA) |

CPU runs with several processes (the tests). accelerate 1.15 turns its FSDP and DeepSpeed plugins off when no
accelerator is visible (`Accelerator(cpu=True)` falls back to plain DDP), while the engines themselves run on a CPU
with gloo. So for CPU runs this module hands accelerate's own FSDP2 / DeepSpeed path the plugin and the distributed
type it would have chosen on a GPU; everything after that (`prepare`, `no_sync`, `clip_grad_norm_`, state dicts,
`deepspeed.initialize`) is accelerate's.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from unlearnkit.errors import UnlearnError

_TRUE = {"1", "true", "yes"}

# What `accelerate launch --config_file configs/accelerate/<name>.yaml` exports for the strategy (the variables this
# module reads), for processes started another way, e.g. `python -m torch.distributed.run` in the tests and benches.
LAUNCH_ENV: dict[str, dict[str, str]] = {
    "ddp": {},
    "fsdp2": {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
              "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer", "FSDP_RESHARD_AFTER_FORWARD": "true",
              "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"},
    "deepspeed-zero2": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
    "deepspeed-zero3": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
}


@dataclass(frozen=True)
class Strategy:
    """The data-parallel strategy of this run (what `accelerate launch` asked for)."""

    name: str  # single | ddp | fsdp2 | deepspeed
    zero_stage: int | None = None  # DeepSpeed's ZeRO stage
    rank: int = 0  # this process's data-parallel rank
    processes: int = 1  # data-parallel processes that train together (1 for `single`)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        if self.name == "deepspeed":
            return f"DeepSpeed ZeRO-{self.zero_stage}"
        return {"single": "one process", "ddp": "DDP", "fsdp2": "FSDP2"}[self.name]

    @property
    def shards_parameters(self) -> bool:
        """Each rank holds only a shard of the weights (FSDP2, ZeRO-3)."""
        return self.name == "fsdp2" or (self.name == "deepspeed" and (self.zero_stage or 0) >= 3)


def join_processes() -> tuple[int, int]:
    """(rank, world size) under a multi-process launch, setting up the process group if nothing has yet: gloo on
    a CPU, nccl on GPUs. Commands call it first, on every rank, so that work one rank does alone (building a world
    under a lock) never holds up the group's set-up; (0, 1) in a single process."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    close_group_at_exit()
    return dist.get_rank(), dist.get_world_size()


_CLOSING = False


def close_group_at_exit() -> None:
    """Destroy the process group when the interpreter exits, while it is still whole. Gloo's worker threads hold
    tensors; a process that ends without `destroy_process_group` frees them during finalisation and can abort
    ("terminate called without an active exception", SIGABRT) after its work is done. No barrier: a rank that
    leaves on an error must not wait for the others."""
    global _CLOSING
    if not _CLOSING:
        _CLOSING = True
        atexit.register(_close_group)


def _close_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def requested() -> Strategy:
    """The strategy the environment asks for (what `accelerate launch` exported), before any Accelerator exists."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in _TRUE:
        stage = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
        if stage not in (2, 3):
            raise UnlearnError(f"DeepSpeed ZeRO stage {stage} is not supported; use zero_stage 2 or 3"
                               " (configs/accelerate/deepspeed-zero2.yaml, deepspeed-zero3.yaml)")
        return Strategy("deepspeed", stage)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in _TRUE:
        version = os.environ.get("FSDP_VERSION", "1")
        if version != "2":
            raise UnlearnError(f"FSDP version {version} is not supported; use FSDP2 (fsdp_version: 2 in the accelerate"
                               " config, e.g. configs/accelerate/fsdp2.yaml)")
        return Strategy("fsdp2")
    return Strategy("ddp" if world > 1 else "single")


def make_accelerator(device: str, mixed_precision: str = "no", local: bool = False, **kwargs):
    """(Accelerator, Strategy) for a training run on `device` (the recipe's model.device). Mixed precision is the
    recipe's `train.mixed_precision`, or, when that is "no", the accelerate config's `mixed_precision`. `local`
    trains in this process alone whatever the launch (the model is not wrapped and nothing is synchronised)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from unlearnkit.model.loading import resolve_device

    strategy = Strategy("single") if local else requested()
    if mixed_precision == "no":  # the recipe left it at its default: the accelerate config's choice, if any
        mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    placed = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    _forget_other_precision(mixed_precision, world)
    if placed.startswith("cuda:") and world == 1:
        torch.cuda.set_device(int(placed.split(":", 1)[1]))
    on_cpu = not placed.startswith(("cuda", "mps"))
    if local:  # this process alone, even under a multi-process launch (e.g. rank 0 building a world)
        return Accelerator(mixed_precision=mixed_precision, cpu=on_cpu, **kwargs), strategy
    if on_cpu and _offloads(strategy):
        raise UnlearnError("CPU offload (fsdp_offload_params / offload_*_device: cpu) moves weights between a GPU and"
                           " pinned CPU memory; on a machine without a GPU use configs/accelerate/fsdp2.yaml or"
                           " deepspeed-zero*.yaml without offload")
    if strategy.name in ("fsdp2", "deepspeed") and on_cpu and world > 1:
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=True, **kwargs)
        _hand_over(accelerator, strategy)
    else:
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=on_cpu, **kwargs)
    if world > 1:
        close_group_at_exit()
    wanted = {"fsdp2": DistributedType.FSDP, "deepspeed": DistributedType.DEEPSPEED}.get(strategy.name)
    if wanted is not None and accelerator.distributed_type != wanted:
        raise UnlearnError(f"the accelerate config asks for {strategy.label}, but accelerate did not start it; launch"
                           " with `accelerate launch --config_file configs/accelerate/...yaml` on several processes")
    if strategy.name == "ddp" and accelerator.num_processes == 1:
        strategy = Strategy("single")
    return accelerator, replace(strategy, rank=accelerator.process_index, processes=accelerator.num_processes)


def _offloads(strategy: Strategy) -> bool:
    """Whether the launch asks to offload weights or optimizer state to CPU memory."""
    env = os.environ
    if strategy.name == "fsdp2":
        return env.get("FSDP_OFFLOAD_PARAMS", "").lower() in _TRUE
    if strategy.name == "deepspeed":
        return "cpu" in (env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", ""),
                         env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", ""))
    return False


def _hand_over(accelerator, strategy: Strategy) -> None:
    """On a CPU: give accelerate's state the FSDP2 / DeepSpeed plugin (built from the variables `accelerate launch`
    set) and the distributed type it would have chosen with a GPU (see the module docstring)."""
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if strategy.name == "fsdp2":
        state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
        state.distributed_type = DistributedType.FSDP
        return
    plugin = DeepSpeedPlugin()
    state.deepspeed_plugins = {"default": plugin}
    plugin.select(_from_accelerator_state=True)
    state.distributed_type = DistributedType.DEEPSPEED


def _forget_other_precision(mixed_precision: str, world: int) -> None:
    """accelerate keeps one state per process and refuses an Accelerator with another mixed precision; in a single
    process (a Python session running one recipe after another) the earlier state is dropped instead."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if world == 1 and state and state.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state()


def check_supported(strategy: Strategy, what: str, *, model_edit: bool = False, representation_edit: bool = False,
                    full_reference: bool = False, inner_backward: bool = False) -> None:
    """Refuse, naming the strategies that work, what cannot run under `strategy`."""
    if strategy.name not in ("fsdp2", "deepspeed"):
        return
    if model_edit:
        raise UnlearnError(f"{what} edits whole weight tensors between its phases, which is not supported under"
                           f" {strategy.label}; run it on one process or under DDP (configs/accelerate/ddp.yaml)")
    if representation_edit:
        raise UnlearnError(f"{what} hooks its edit into the frozen model's blocks, which is not supported under"
                           f" {strategy.label}; run it on one process or under DDP (configs/accelerate/ddp.yaml)")
    if inner_backward and strategy.name == "deepspeed":
        raise UnlearnError(f"{what} runs backward passes inside its loss (a latent adversary), which DeepSpeed's engine"
                           " intercepts; use FSDP2 (configs/accelerate/fsdp2.yaml) or DDP (configs/accelerate/ddp.yaml)")
    if full_reference and strategy.name == "deepspeed" and strategy.shards_parameters:
        raise UnlearnError(f"{what} needs the whole frozen reference model during training, which unlearnkit does not"
                           f" shard under {strategy.label}; use FSDP2 (configs/accelerate/fsdp2.yaml), ZeRO-2, or LoRA"
                           " (model.lora.r: the reference is the same model with its adapters off)")


def fsdp2_sharder(accelerator) -> Callable[[nn.Module], nn.Module]:
    """Shard a frozen module the way the trained model is sharded (accelerate's FSDP2 preparation)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    return lambda module: fsdp2_prepare_model(accelerator, module)


def reshard(model: nn.Module) -> None:
    """Back to sharded parameters after forwards outside training (FSDP2 keeps the root's gathered weights after a
    forward until its backward, and the optimizer holds the sharded ones); a no-op for unsharded models."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
