"""How training is spread over processes — chosen by `accelerate launch`, run by the engines accelerate drives.

unlearnkit writes no distributed runtime. `accelerate launch --config_file configs/accelerate/X.yaml -m
unlearnkit.cli run ...` sets environment variables that `accelerate.Accelerator` reads; this module builds
that Accelerator and names the strategy it chose, so the trainer knows what composes with it:

| strategy | who synchronises gradients | the step's backward passes | a frozen reference copy |
|---|---|---|---|
| `single` | nobody | one per loss term (peak memory = the largest term's) | plain copy |
| `ddp` | DDP's buckets, overlapped with the last backward of the step | one per term; all but the last under `no_sync` | plain copy on each rank |
| `fsdp2` | FSDP2's reduce-scatter, on the last backward of the step | one per term; all but the last with gradient sync off | sharded like the model (`fully_shard`) |

DeepSpeed is refused (`requested`): accelerate's DeepSpeed engine steps the optimizer inside the last backward,
before the trainer's divergence guard can look at the gradient norm, and its checkpoints are pickled.

FSDP2 on a CPU. accelerate 1.15 turns its FSDP plugin off when no accelerator is visible (`Accelerator(cpu=True)`
falls back to plain DDP). Torch's FSDP2 itself runs on CPU with gloo, so for CPU runs with several processes
(the tests) this module hands accelerate's own FSDP2 path the plugin and the distributed type it would have
chosen on a GPU; everything after that (`prepare`, `no_sync`, `clip_grad_norm_`, state dicts) is accelerate's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from unlearnkit.errors import UnlearnError

_TRUE = {"1", "true", "yes"}


@dataclass(frozen=True)
class Strategy:
    """The data-parallel strategy of this run (what `accelerate launch` asked for)."""

    name: str  # single | ddp | fsdp2
    rank: int = 0  # this process's data-parallel rank
    processes: int = 1  # data-parallel processes that train together (1 for `single`)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        return {"single": "one process", "ddp": "DDP", "fsdp2": "FSDP2"}[self.name]

    @property
    def shards_parameters(self) -> bool:
        """Each rank holds only a shard of the weights."""
        return self.name == "fsdp2"


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
    return dist.get_rank(), dist.get_world_size()


def requested() -> Strategy:
    """The strategy the environment asks for (what `accelerate launch` exported), before any Accelerator exists."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in _TRUE:
        raise UnlearnError("DeepSpeed is not supported yet (its engine steps inside the backward, before the divergence"
                           " guard, and its checkpoints are pickled); use FSDP2, which shards like ZeRO-3:"
                           " accelerate launch --config_file configs/accelerate/fsdp2.yaml ...")
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
    if strategy.name == "fsdp2" and on_cpu and world > 1:
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin(fsdp_version=2)  # reads the FSDP_* variables accelerate launch set
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=True, **kwargs)
        accelerator.state.fsdp_plugin = plugin
        accelerator.state.distributed_type = DistributedType.FSDP
    else:
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=on_cpu, **kwargs)
    if strategy.name == "fsdp2" and accelerator.distributed_type != DistributedType.FSDP:
        raise UnlearnError("the accelerate config asks for FSDP2, but accelerate did not start it; launch with"
                           " `accelerate launch --config_file configs/accelerate/fsdp2.yaml` on several processes")
    if strategy.name == "ddp" and accelerator.num_processes == 1:
        strategy = Strategy("single")
    return accelerator, replace(strategy, rank=accelerator.process_index, processes=accelerator.num_processes)


def _forget_other_precision(mixed_precision: str, world: int) -> None:
    """accelerate keeps one state per process and refuses an Accelerator with another mixed precision; in a single
    process (a Python session running one recipe after another) the earlier state is dropped instead."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if world == 1 and state and state.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state()


def check_supported(strategy: Strategy, what: str, *, model_edit: bool = False, representation_edit: bool = False) -> None:
    """Refuse, naming the strategies that work, what cannot run under `strategy`."""
    if not strategy.shards_parameters:
        return
    if model_edit:
        raise UnlearnError(f"{what} edits whole weight tensors between its phases, which sharded weights ({strategy.label})"
                           " cannot do; run it on one process or under DDP (configs/accelerate/ddp.yaml)")
    if representation_edit:
        raise UnlearnError(f"{what} hooks its edit into the frozen model's blocks, which is not supported under"
                           f" {strategy.label}; run it on one process or under DDP (configs/accelerate/ddp.yaml)")
