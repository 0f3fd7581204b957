"""Checkpoints and atomic output.

A checkpoint directory holds the model as `save_pretrained` writes it (safetensors; for LoRA
only the adapter) plus `trainer_state.safetensors` (trainable parameters, AdamW moments and the
torch RNG state for dropout, so a resumed run continues exactly) and `trainer_state.json` (step,
log, LR schedule). Nothing is pickled. Directories and files are written under a temporary name
and renamed into place, so a crash never leaves something that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `final` in one rename.

    For folders unlearnkit owns (caches, checkpoints, model/ inside an output). A folder the user names
    goes through `unlearnkit.pipeline.outputs.output_dir`, which never replaces what unlearnkit did not write."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700; outputs are meant to be read
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be read
    os.replace(tmp, path)


def save_model(model: nn.Module, tokenizer, path: str | Path) -> None:
    """`save_pretrained` (safetensors) of model and tokenizer, atomically.

    Representation edits (GRUN) are written apart from the weights, as edits.safetensors +
    edits.json (`unlearnkit.model.edits`); `models.load_model` re-attaches them.
    """
    from unlearnkit.model.edits import edits_detached, save_edits

    with atomic_dir(path) as tmp:
        with edits_detached(model):
            model.save_pretrained(tmp, safe_serialization=True)
        save_edits(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


FORMAT = 2  # trainer_state.json "format": optimizer moments keyed by parameter name (1: by index, before 2026-11)


def gather_state(model: nn.Module, optimizer, distributed: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state, optimizer state) as full tensors, keyed by parameter names.

    With `distributed`, call it on every rank: under FSDP2 each rank contributes its shard (torch's
    `get_state_dict` gathers them) and rank 0 receives the full state on the CPU, other ranks empty dicts.
    Without it, this process's own state (one process, or `TrainConfig.local`).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from unlearnkit.train import deepspeed_state

    if deepspeed_state.is_engine(model):
        return deepspeed_state.gather_state(model, optimizer)
    options = StateDictOptions(full_state_dict=True, cpu_offload=distributed)
    return get_state_dict(model, optimizer, options=options)


def save_checkpoint(path: str | Path, model: nn.Module, state: tuple[dict, dict], scheduler, step: int,
                    history: list[dict], trained: list[str], method_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write a checkpoint from gathered `state` (rank 0 only): `model` (the unwrapped model, or a skeleton of
    it) saves `state`'s weights with `save_pretrained`; the trainable weights and AdamW moments go to
    trainer_state.safetensors; step, log and schedule to trainer_state.json."""
    from safetensors.torch import save_file

    from unlearnkit.model.edits import edits_detached, save_edits

    weights, optim = state
    tensors = {f"param.{n}": weights[n].detach().cpu().contiguous() for n in trained if n in weights}
    for name, values in optim["state"].items():
        for key, value in values.items():
            tensors[f"optim.{name}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    for key, value in (method_state or {}).items():  # the method's own state (`UnlearningMethod.state_dict`)
        tensors[f"method.{key}"] = value.detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    meta = {"format": FORMAT, "step": step, "history": history, "scheduler": scheduler.state_dict(),
            "param_groups": optim["param_groups"]}
    with atomic_dir(path) as tmp:
        with edits_detached(model):
            model.save_pretrained(tmp, state_dict=_saved_weights(model, weights), safe_serialization=True)
        save_edits(model, tmp)
        save_file(tensors, str(tmp / "trainer_state.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(meta, default=str))


def _saved_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weights` as `save_pretrained` expects them: without the representation edits (`save_edits` writes those);
    call inside `edits_detached`."""
    keep = set(model.state_dict().keys())
    return {k: v for k, v in weights.items() if k in keep}


def check_checkpoint(path: str | Path) -> Path:
    """`path` if it is a checkpoint written by this trainer, else an UnlearnError naming the fix."""
    from unlearnkit.errors import UnlearnError

    path = Path(path).expanduser()
    missing = [n for n in ("trainer_state.safetensors", "trainer_state.json") if not (path / n).is_file()]
    if missing:
        raise UnlearnError(f"train.resume_from: {path} is not a checkpoint written by unlearnkit (no {missing[0]});"
                           " point it at DIR/checkpoints/step-N, or use `unlearn run ... --resume`")
    return path


def load_trainer_state(path: str | Path, model: nn.Module, optimizer, scheduler, method=None) -> tuple[int, list[dict]]:
    """Restore trainable weights, optimizer moments, schedule and the method's own state; returns (step, history).

    Every rank reads the (consolidated) checkpoint and loads it into its own shards (torch's `set_state_dict`),
    so a run resumes under the strategy it was saved with."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    from unlearnkit.errors import UnlearnError
    from unlearnkit.train import deepspeed_state

    path = check_checkpoint(path)
    try:
        tensors = load_file(str(path / "trainer_state.safetensors"))
        meta = json.loads((path / "trainer_state.json").read_text())
        step, history, groups, schedule = int(meta["step"]), list(meta["history"]), meta["param_groups"], meta["scheduler"]
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise UnlearnError(f"train.resume_from: the checkpoint {path} is damaged ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); resume from an earlier"
                           " checkpoint or start over") from None
    if meta.get("format") != FORMAT:
        raise UnlearnError(f"train.resume_from: the checkpoint {path} was written by an older unlearnkit; start the run"
                           " over (unlearn run ... --restart)")
    params = {name: p for name, p in _unwrapped(model).named_parameters()}
    weights: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.startswith("param."):
            name = key[len("param."):]
            if name not in params or tuple(getattr(params[name], "ds_shape", params[name].shape)) != tuple(value.shape):
                raise UnlearnError(f"checkpoint {path} has parameter '{name}' that the model lacks (or with another"
                                   " shape); resume with the same model and method settings")
            weights[name] = value
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            name, moment = key[len("optim."):].rsplit(".", 1)
            state.setdefault(name, {})[moment] = value
    try:
        if deepspeed_state.is_engine(model):
            deepspeed_state.load_state(model, weights, state)
        else:
            set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict={"state": state, "param_groups": groups},
                           options=StateDictOptions(full_state_dict=True, strict=False))
    except (ValueError, KeyError, RuntimeError) as err:
        raise UnlearnError(f"checkpoint {path} does not fit this run's optimizer ({str(err).splitlines()[0]}); resume"
                           " with the same model, method and train settings") from None
    if method is not None:
        method.load_state_dict({k[len("method."):]: v for k, v in tensors.items() if k.startswith("method.")})
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda_rng = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
    if cuda_rng and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    scheduler.load_state_dict(schedule)
    return step, history


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP and DeepSpeed keep the model in .module; FSDP2 shards it in place


def meta_skeleton(model: nn.Module) -> nn.Module:
    """A copy of `model`'s module tree (adapters and edits included) whose parameters sit on the meta device:
    it costs no memory, and `consolidate` fills it with the full weights after sharded training."""
    import copy

    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo)


def consolidate(model: nn.Module, skeleton: nn.Module, device) -> nn.Module:
    """The full weights of a sharded `model` (every rank calls it) loaded into `skeleton`, on `device`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    skeleton.load_state_dict(full, strict=False, assign=True)
    if hasattr(skeleton, "tie_weights"):
        skeleton.tie_weights()
    missing = [n for n, p in skeleton.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"consolidating the sharded model left {len(missing)} parameters unset (e.g. {missing[0]})")
    return skeleton.to(device)
