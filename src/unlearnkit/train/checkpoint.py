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


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"param.{n}": p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: str | Path, model: nn.Module, optimizer, scheduler, step: int,
                    history: list[dict]) -> None:
    from safetensors.torch import save_file

    tensors = _trainable_state(model)
    opt_state = optimizer.state_dict()
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    meta = {"step": step, "history": history, "scheduler": scheduler.state_dict(),
            "param_groups": opt_state["param_groups"]}
    from unlearnkit.model.edits import edits_detached, save_edits

    with atomic_dir(path) as tmp:
        with edits_detached(model):
            model.save_pretrained(tmp, safe_serialization=True)
        save_edits(model, tmp)
        save_file(tensors, str(tmp / "trainer_state.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(meta, default=str))


def check_checkpoint(path: str | Path) -> Path:
    """`path` if it is a checkpoint written by this trainer, else an UnlearnError naming the fix."""
    from unlearnkit.errors import UnlearnError

    path = Path(path).expanduser()
    missing = [n for n in ("trainer_state.safetensors", "trainer_state.json") if not (path / n).is_file()]
    if missing:
        raise UnlearnError(f"train.resume_from: {path} is not a checkpoint written by unlearnkit (no {missing[0]});"
                           " point it at DIR/checkpoints/step-N, or use `unlearn run ... --resume`")
    return path


def load_trainer_state(path: str | Path, model: nn.Module, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Restore trainable weights, optimizer moments and schedule; returns (step, history)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from unlearnkit.errors import UnlearnError

    path = check_checkpoint(path)
    try:
        tensors = load_file(str(path / "trainer_state.safetensors"))
        meta = json.loads((path / "trainer_state.json").read_text())
        step, history, groups, schedule = int(meta["step"]), list(meta["history"]), meta["param_groups"], meta["scheduler"]
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise UnlearnError(f"train.resume_from: the checkpoint {path} is damaged ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); resume from an earlier"
                           " checkpoint or start over") from None
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("param."):
                name = key[len("param."):]
                if name not in params or params[name].shape != value.shape:
                    raise UnlearnError(f"checkpoint {path} has parameter '{name}' that the model lacks (or with another"
                                       " shape); resume with the same model and method settings")
                params[name].copy_(value)
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise UnlearnError(f"checkpoint {path} does not fit this run's optimizer ({err}); resume with the same"
                           " model, method and train settings") from None
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda_rng = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
    if cuda_rng and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    scheduler.load_state_dict(schedule)
    return step, history
