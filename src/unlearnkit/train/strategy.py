"""How training is spread over processes — chosen by `accelerate launch`, run by the engines accelerate drives.

unlearnkit writes no distributed runtime. `accelerate launch --config_file configs/accelerate/X.yaml -m
unlearnkit.cli run ...` sets environment variables that `accelerate.Accelerator` reads; this module builds
that Accelerator and names the strategy it chose, so the trainer knows what composes with it:

| strategy | who synchronises gradients | the step's backward passes | a frozen reference copy |
|---|---|---|---|
| `single` | nobody | one per loss term (peak memory = the largest term's) | plain copy |
| `ddp` | DDP's buckets, overlapped with the last backward of the step | one per term; all but the last under `no_sync` | plain copy on each rank |
| `fsdp2` | FSDP2's reduce-scatter, on the last backward of the step | one per term; all but the last with gradient sync off | sharded like the model (`fully_shard`) |
| `deepspeed` (ZeRO-2/3) | the DeepSpeed engine | one per micro-batch (the terms summed): the engine steps on its own boundary | ZeRO-3: refused (see `check_supported`) |

FSDP2 on a CPU. accelerate 1.15 turns its FSDP plugin off when no accelerator is visible (`Accelerator(cpu=True)`
falls back to plain DDP). Torch's FSDP2 itself runs on CPU with gloo, so for CPU runs with several processes
(the tests) this module hands accelerate's own FSDP2 path the plugin and the distributed type it would have
chosen on a GPU; everything after that (`prepare`, `no_sync`, `clip_grad_norm_`, state dicts) is accelerate's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from unlearnkit.errors import UnlearnError

_TRUE = {"1", "true", "yes"}


@dataclass(frozen=True)
class Strategy:
    """The data-parallel strategy of this run (what `accelerate launch` asked for)."""

    name: str  # single | ddp | fsdp2 | deepspeed
    zero_stage: int | None = None  # DeepSpeed's ZeRO stage

    @property
    def label(self) -> str:
        return f"DeepSpeed ZeRO-{self.zero_stage}" if self.name == "deepspeed" else self.name.upper().replace("SINGLE", "one process")

    @property
    def shards_parameters(self) -> bool:
        """Each rank holds only a shard of the weights (FSDP2, ZeRO-3)."""
        return self.name == "fsdp2" or (self.name == "deepspeed" and (self.zero_stage or 0) >= 3)

    @property
    def split_backward(self) -> bool:
        """Whether a step may run one backward per loss term (DeepSpeed's engine wants one per micro-batch)."""
        return self.name != "deepspeed"


def requested() -> Strategy:
    """The strategy the environment asks for (what `accelerate launch` exported), before any Accelerator exists."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in _TRUE:
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        return Strategy("deepspeed", int(stage) if stage and stage.isdigit() else None)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in _TRUE:
        version = os.environ.get("FSDP_VERSION", "1")
        if version != "2":
            raise UnlearnError(f"FSDP version {version} is not supported; use FSDP2 (fsdp_version: 2 in the accelerate"
                               " config, e.g. configs/accelerate/fsdp2.yaml)")
        return Strategy("fsdp2")
    return Strategy("ddp" if world > 1 else "single")


def make_accelerator(device: str, mixed_precision: str = "no", **kwargs):
    """(Accelerator, Strategy) for a training run on `device` (the recipe's model.device)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from unlearnkit.model.loading import resolve_device

    strategy = requested()
    placed = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if placed.startswith("cuda:") and world == 1:
        torch.cuda.set_device(int(placed.split(":", 1)[1]))
    on_cpu = not placed.startswith(("cuda", "mps"))
    if strategy.name == "fsdp2" and on_cpu and world > 1:
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin(fsdp_version=2)  # reads the FSDP_* variables accelerate launch set
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=True, **kwargs)
        accelerator.state.fsdp_plugin = plugin
        accelerator.state.distributed_type = DistributedType.FSDP
    else:
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=on_cpu, **kwargs)
    seen = accelerator.distributed_type
    if strategy.name == "deepspeed":
        if seen != DistributedType.DEEPSPEED:
            raise UnlearnError("the accelerate config asks for DeepSpeed, but accelerate did not start it on this machine"
                               " (DeepSpeed needs a GPU under accelerate); use configs/accelerate/ddp.yaml or fsdp2.yaml")
        stage = accelerator.state.deepspeed_plugin.zero_stage
        strategy = Strategy("deepspeed", int(stage))
    elif strategy.name == "fsdp2" and seen != DistributedType.FSDP:
        raise UnlearnError("the accelerate config asks for FSDP2, but accelerate did not start it; launch with"
                           " `accelerate launch --config_file configs/accelerate/fsdp2.yaml` on several processes")
    elif strategy.name == "ddp" and accelerator.num_processes == 1:
        strategy = Strategy("single")
    return accelerator, strategy


def check_supported(strategy: Strategy, what: str, *, model_edit: bool = False, representation_edit: bool = False,
                    full_reference: bool = False) -> None:
    """Refuse, naming the strategies that work, what cannot run under `strategy`."""
    if not strategy.shards_parameters:
        return
    if model_edit:
        raise UnlearnError(f"{what} edits whole weight tensors between its phases, which sharded weights ({strategy.label})"
                           " cannot do; run it on one process or under DDP (configs/accelerate/ddp.yaml)")
    if representation_edit:
        raise UnlearnError(f"{what} hooks its edit into the frozen model's blocks, which is not supported under"
                           f" {strategy.label}; run it on one process or under DDP (configs/accelerate/ddp.yaml)")
    if full_reference and strategy.name == "deepspeed":
        raise UnlearnError(f"{what} needs the full frozen reference model during training, which unlearnkit does not"
                           f" shard under {strategy.label}; use FSDP2 (configs/accelerate/fsdp2.yaml), DDP, or LoRA"
                           " (model.lora.r: the reference is the same model with its adapters off)")
