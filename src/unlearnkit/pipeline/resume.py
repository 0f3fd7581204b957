"""Resuming an interrupted run (`unlearn run --resume`): what can resume, and the train settings that do.

A run records its resolved recipe in its partial folder (``DIR.partial/recipe.json``); `--resume` must
match it and continues from the folder's last checkpoint (`outputs.checkpoints`), which the trainer
restores exactly (weights, optimizer moments, schedule, RNG; the batch stream is replayed to that step).
"""

from __future__ import annotations

from pathlib import Path

from unlearnkit.errors import UnlearnError
from unlearnkit.recipe import Recipe


def check_resumable(recipe: Recipe, method) -> None:
    """--resume continues one training run from a checkpoint; refuse what that cannot reproduce."""
    from unlearnkit.methods.base import ModelEdit

    why = ("it trains in several phases" if isinstance(method, ModelEdit) else
           "it unlearns several requests (data.sequential)" if recipe.data.sequential else
           "its checkpoint selection (eval.select) is not checkpointed" if recipe.eval.select.every > 0 else
           "train.resume_from already names a checkpoint" if recipe.train.resume_from else None)
    if why:
        raise UnlearnError(f"--resume cannot continue this run: {why}; run it again without --resume"
                           " (add --restart to discard the partial run)")


def train_settings(recipe: Recipe, partial: Path, resume: bool, checkpoints_in: Path | None = None):
    """The train settings, continuing from the partial run's last checkpoint with `resume`.

    A fresh run records its resolved recipe in the partial folder; a resumed one must match it. Under several
    processes, ranks other than 0 write into a scratch `partial` and read the checkpoints from `checkpoints_in`
    (rank 0's partial folder), so every rank resumes from the same step."""
    import json

    from unlearnkit.pipeline.outputs import checkpoints
    from unlearnkit.train import TrainConfig

    resolved = json.loads(json.dumps({k: v for k, v in recipe.resolved().items() if k != "output_dir"}, default=str))
    saved_path = partial / "recipe.json"
    if resume and saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        if saved != resolved:
            raise UnlearnError(f"--resume: the interrupted run in {partial} used {_first_difference(saved, resolved)};"
                               " run the same command with --resume, or use --restart to discard it and start over")
    if recipe.train.resume_from:
        from unlearnkit.train.checkpoint import check_checkpoint

        check_checkpoint(recipe.train.resume_from)  # before anything is loaded
    saved_path.write_text(json.dumps(resolved, indent=1, default=str))
    settings = recipe.train.model_dump()
    source = checkpoints_in or partial
    if resume and checkpoints(source):
        settings["resume_from"] = str(checkpoints(source)[-1])
    return TrainConfig(seed=recipe.seed, device=recipe.model.device, **settings)


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                return _first_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            return f"{prefix}{key}={a!r} (this command: {b!r})"
    return "other settings"
