"""Experiment tracking (`train.report_to: [tensorboard, wandb, ...]`) through accelerate's trackers.

The trainer builds `Accelerator(**accelerator_kwargs(report_to, out_dir))` and wraps it in `Tracking`:
`start(run_name, config)` once, `log(values, step)` after each optimizer step (every loss part, lr,
grad_norm), `log_metrics(metrics, step)` after an evaluation, `finish()` at the end. Only the main process
logs; on other ranks, and with an empty `report_to`, every call does nothing. Progress bars stay.

Files go under ``out_dir/tracking`` (``runs/tracking`` without an out_dir, said in the log); TensorBoard's
are ``tracking/<run_name>/events.out.tfevents.*`` (``tensorboard --logdir DIR/tracking``).

No run needs a network or an account: from `start` to `finish`, and only where the user set nothing,
wandb gets WANDB_MODE=offline (unless WANDB_API_KEY, WANDB_BASE_URL, WANDB_IDENTITY_TOKEN_FILE or a
`wandb login` in ~/.netrc ($NETRC) says otherwise; `wandb sync` uploads later) and
WANDB_DIR=out_dir/tracking; mlflow gets MLFLOW_TRACKING_URI=file:out_dir/tracking/mlruns, a file
store (with MLFLOW_ALLOW_FILE_STORE=true, which MLflow 3 asks for); dvclive writes into
out_dir/tracking/dvclive. aim, tensorboard and trackio are local anyway; comet_ml, clearml and swanlab
follow their own configuration.

`finish` closes the trackers itself: `accelerator.end_training()` would also destroy the
torch.distributed process group that the evaluation after training still uses.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

from unlearnkit.errors import UnlearnError
from unlearnkit.logs import info
from unlearnkit.registry import did_you_mean, show_value

PIP_PACKAGES = {"comet_ml": "comet-ml"}  # where the pip package is not named like the tracker


def tracker_problem(names: list[str]) -> str | None:
    """What is wrong with `names` as report_to, worded to follow "report_to"; None when nothing is."""
    if not names:
        return None
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    known = sorted(t.value for t in LoggerType if t.value != "all")
    for name in names:
        if name not in known:
            return f"names an unknown tracker '{name}';{did_you_mean(name, known)} valid: {', '.join(known)}"
    missing = [name for name in names if name not in {t.value for t in get_available_trackers()}]
    if missing:
        return (f"names {', '.join(missing)}, whose package is not installed:"
                f" pip install {' '.join(PIP_PACKAGES.get(m, m) for m in missing)}")
    return None


def accelerator_kwargs(report_to: list[str], out_dir: Path | None) -> dict[str, Any]:
    """`Accelerator(...)` keyword arguments that turn on the trackers in `report_to` ({} when it is empty)."""
    names = list(dict.fromkeys(report_to))
    if not names:
        return {}
    problem = tracker_problem(names)
    if problem:
        raise UnlearnError(f"report_to {problem}")
    from accelerate.utils import ProjectConfiguration

    root = Path(out_dir if out_dir is not None else "runs").resolve()
    if out_dir is None:
        info(f"experiment tracking: no output folder given; {', '.join(names)} write to {root / 'tracking'}")
    return {"log_with": names,
            "project_config": ProjectConfiguration(project_dir=str(root), logging_dir=str(root / "tracking"))}


def flatten_config(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """`config` as `section.field` keys with bool/int/float/str values (what TensorBoard's hparams take);
    any other value is written as in a recipe (null, [8, 4])."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else show_value(value)
    return out


def scalars(values: dict, prefix: str = "") -> dict[str, float]:
    """The numbers in `values` (0-d tensors and numpy scalars too) as floats under `prefix + key`, nested
    dicts joined with '/'; None, booleans, text and lists are left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(scalars(value, f"{prefix}{key}/"))
            continue
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def _wandb_configured() -> bool:
    """True when W&B has credentials or a server: in the environment, or from `wandb login` (~/.netrc)."""
    if any(os.environ.get(k) for k in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE")):
        return True
    netrc = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return "wandb" in netrc.read_text(errors="replace")
    except OSError:  # none, or unreadable
        return False


def offline_environment(names: set[str], logging_dir: Path) -> dict[str, str]:
    """Environment variables that keep `names` offline and inside `logging_dir`, where none is set already."""
    wanted = {}
    if "wandb" in names:
        wanted.update(WANDB_DIR=str(logging_dir), **({} if _wandb_configured() else {"WANDB_MODE": "offline"}))
    if "mlflow" in names and "MLFLOW_TRACKING_URI" not in os.environ:  # MLflow 3 wants the file store allowed
        wanted.update(MLFLOW_TRACKING_URI=(logging_dir / "mlruns").resolve().as_uri(), MLFLOW_ALLOW_FILE_STORE="true")
    return {key: value for key, value in wanted.items() if key not in os.environ}


class Tracking:
    """The experiment trackers of one `Accelerator` built with `accelerator_kwargs` (see the module doc)."""

    def __init__(self, accelerator, report_to: list[str] | None = None):
        self.accelerator = accelerator  # `report_to`, if given, is what went to `accelerator_kwargs`
        wanted = bool(accelerator.log_with) and (report_to is None or bool(report_to))
        self.active = wanted and accelerator.is_main_process  # other ranks log nothing
        self.running = False
        self._environment: dict[str, str] = {}  # what `start` set, removed again by `finish`

    def start(self, run_name: str, config: dict | None = None) -> None:
        """Open a run named `run_name` in every tracker, recording `config` (e.g. the resolved recipe)."""
        if not self.active or self.running:
            return
        logging_dir = Path(self.accelerator.logging_dir)
        logging_dir.mkdir(parents=True, exist_ok=True)
        names = {getattr(t, "value", str(t)) for t in self.accelerator.log_with}
        self._environment = offline_environment(names, logging_dir)
        os.environ.update(self._environment)
        if self._environment:
            info("experiment tracking: " + ", ".join(f"{k}={v}" for k, v in self._environment.items()))
        init_kwargs = {"dvclive": {"dir": str(logging_dir / "dvclive")}} if "dvclive" in names else {}
        try:
            self.accelerator.init_trackers(run_name, config=flatten_config(config) if config else None,
                                           init_kwargs=init_kwargs)
        except BaseException:
            self._restore_environment()
            raise
        self.running = True

    def log(self, values: dict[str, float], step: int) -> None:
        """One step's numbers under their own names (every loss part, lr, grad_norm)."""
        if self.running:
            self.accelerator.log(scalars(values), step=step)

    def log_metrics(self, metrics: dict, step: int, prefix: str = "eval/") -> None:
        """Evaluation metrics as `prefix + name` (nested dicts joined with '/'; None and text left out)."""
        if self.running:
            self.accelerator.log(scalars(metrics, prefix), step=step)

    def finish(self) -> None:
        """Close every tracker (their files are complete afterwards); calling it again does nothing."""
        if not self.running:
            return
        self.running = False
        try:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.accelerator.trackers.clear()
        finally:
            self._restore_environment()

    def _restore_environment(self) -> None:
        for key, value in self._environment.items():
            if os.environ.get(key) == value:
                del os.environ[key]
        self._environment = {}
