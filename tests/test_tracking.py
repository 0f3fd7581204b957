"""Experiment tracking (`train.report_to`, unlearnkit.train.tracking): TensorBoard files read back, names
checked with a suggestion, offline defaults that never override the user, nothing on other ranks."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from unlearnkit.errors import UnlearnError
from unlearnkit.recipe import validate_recipe
from unlearnkit.train import tracking
from unlearnkit.train.tracking import Tracking, accelerator_kwargs, flatten_config, offline_environment, scalars


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_files_hold_every_logged_value(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, **accelerator_kwargs(["tensorboard"], tmp_path))
    run = Tracking(accelerator, ["tensorboard"])
    config = {"train": {"lr": 1e-3, "betas": (0.9, 0.999), "resume_from": None}, "method": "npo", "seed": 0}
    run.start("unlearn", config)
    for step in (1, 2, 3):
        run.log({"loss": 1.0 / step, "forget": torch.tensor(0.5 * step), "retain": np.float32(0.25),
                 "lr": 1e-3, "grad_norm": 2.0 * step}, step)
    run.log_metrics({"forget_prob": 0.125, "retain": {"rouge": 0.75}, "forget_quality": None, "note": "text"}, 3)
    run.finish()
    run.finish()  # idempotent
    run.log({"loss": 9.0}, 4)  # after finish: nothing

    found = _scalars(tmp_path / "tracking" / "unlearn")
    assert set(found) == {"loss", "forget", "retain", "lr", "grad_norm", "eval/forget_prob", "eval/retain/rouge"}
    assert found["loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert found["forget"] == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert found["grad_norm"] == [(1, 2.0), (2, 4.0), (3, 6.0)]
    assert found["lr"][0] == (1, pytest.approx(1e-3))
    assert found["eval/forget_prob"] == [(3, 0.125)] and found["eval/retain/rouge"] == [(3, 0.75)]
    # the config went in as TensorBoard hparams (accelerate keeps a copy as hparams.yml)
    (hparams,) = (tmp_path / "tracking" / "unlearn").glob("*/hparams.yml")
    assert yaml.safe_load(hparams.read_text()) == {"train.lr": 1e-3, "train.betas": "[0.9, 0.999]",
                                                    "train.resume_from": "null", "method": "npo", "seed": 0}


def test_no_trackers_no_files_and_no_calls(tmp_path):
    from accelerate import Accelerator

    assert accelerator_kwargs([], tmp_path) == {}
    run = Tracking(Accelerator(cpu=True, **accelerator_kwargs([], tmp_path)), [])
    run.start("unlearn", {"lr": 1.0})
    run.log({"loss": 1.0}, 1)
    run.log_metrics({"forget_prob": 0.5}, 1)
    run.finish()
    assert not run.active and list(tmp_path.iterdir()) == []


class _Refuses:
    """An accelerator whose tracker methods must not be called."""

    log_with = ["tensorboard"]
    trackers: list = []

    def __init__(self, main: bool, logging_dir: Path):
        self.is_main_process, self.logging_dir = main, str(logging_dir)

    def init_trackers(self, *args, **kwargs):
        raise AssertionError("init_trackers on a rank that must not log")

    log = init_trackers


def test_other_ranks_do_nothing(tmp_path):
    run = Tracking(_Refuses(main=False, logging_dir=tmp_path / "tracking"))
    run.start("unlearn", {"lr": 1.0})
    run.log({"loss": 1.0}, 1)
    run.log_metrics({"forget_prob": 0.5}, 1)
    run.finish()
    assert not (tmp_path / "tracking").exists()


def test_unknown_tracker_suggests_the_near_miss():
    with pytest.raises(UnlearnError, match=r"unknown tracker 'tensorbord'; did you mean 'tensorboard'\? valid: .*wandb"):
        accelerator_kwargs(["tensorbord"], None)


def test_missing_package_names_the_pip_install(monkeypatch):
    monkeypatch.setattr("accelerate.tracking.get_available_trackers", lambda: [])
    with pytest.raises(UnlearnError, match="report_to names tensorboard, comet_ml, whose package is not installed:"
                                           " pip install tensorboard comet-ml"):
        accelerator_kwargs(["tensorboard", "comet_ml"], None)


def test_without_out_dir_files_go_to_runs_tracking_and_the_log_says_so(tmp_path, monkeypatch):
    said = []
    monkeypatch.setattr(tracking, "info", said.append)
    monkeypatch.chdir(tmp_path)
    kwargs = accelerator_kwargs(["tensorboard", "tensorboard"], None)
    assert kwargs["log_with"] == ["tensorboard"]
    assert Path(kwargs["project_config"].logging_dir) == tmp_path / "runs" / "tracking"
    assert said and str(tmp_path / "runs" / "tracking") in said[0]


def _no_wandb_login(monkeypatch, tmp_path):
    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE",
                "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_wandb_and_mlflow_default_to_offline_files(tmp_path, monkeypatch):
    _no_wandb_login(monkeypatch, tmp_path)
    assert offline_environment({"wandb", "mlflow"}, tmp_path) == {
        "WANDB_DIR": str(tmp_path), "WANDB_MODE": "offline",
        "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}


def test_offline_defaults_never_override_the_user(tmp_path, monkeypatch):
    _no_wandb_login(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert offline_environment({"wandb", "mlflow"}, tmp_path) == {"WANDB_DIR": str(tmp_path)}
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # credentials: W&B decides (online)
    assert "WANDB_MODE" not in offline_environment({"wandb"}, tmp_path)
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # `wandb login`
    assert "WANDB_MODE" not in offline_environment({"wandb"}, tmp_path)


def test_offline_environment_lasts_from_start_to_finish(tmp_path, monkeypatch):
    _no_wandb_login(monkeypatch, tmp_path)
    seen = {}

    class _Wandb:
        log_with, trackers, is_main_process, logging_dir = ["wandb"], [], True, str(tmp_path / "tracking")

        def init_trackers(self, run_name, config=None, init_kwargs=None):
            seen.update(mode=os.environ.get("WANDB_MODE"), dir=os.environ.get("WANDB_DIR"), config=config)

    run = Tracking(_Wandb())
    run.start("unlearn", {"train": {"lr": 0.5}})
    assert seen == {"mode": "offline", "dir": str(tmp_path / "tracking"), "config": {"train.lr": 0.5}}
    run.finish()
    assert "WANDB_MODE" not in os.environ and "WANDB_DIR" not in os.environ


def test_flatten_config_and_scalars():
    assert flatten_config({"a": {"b": 1, "c": {"d": True}}, "e": [8, 4], "f": {}, "g": None, "h": "x"}) == {
        "a.b": 1, "a.c.d": True, "e": "[8, 4]", "f": "{}", "g": "null", "h": "x"}
    assert scalars({"x": 1, "y": torch.tensor(2.0), "z": np.float64(3), "t": "a", "n": None, "b": True,
                    "v": [1.0], "m": torch.ones(2), "d": {"k": 4}}, "eval/") == {
        "eval/x": 1.0, "eval/y": 2.0, "eval/z": 3.0, "eval/d/k": 4.0}


def test_recipe_accepts_installed_trackers_and_refuses_a_typo(tmp_path):
    recipe = validate_recipe({"train": {"report_to": ["tensorboard"], "gradient_checkpointing": True}})
    assert recipe.train.report_to == ["tensorboard"] and recipe.train.gradient_checkpointing
    assert validate_recipe({"train": {"report_to": "tensorboard"}}).train.report_to == ["tensorboard"]
    assert validate_recipe({}).train.report_to == [] and not validate_recipe({}).train.gradient_checkpointing
    with pytest.raises(UnlearnError, match=r"r\.yaml: field 'train\.report_to' names an unknown tracker 'tensorbord';"
                                           r" did you mean 'tensorboard'\?"):
        validate_recipe({"train": {"report_to": ["tensorbord"]}}, "r.yaml")

    from unlearnkit.pipeline.resume import train_settings

    cfg = train_settings(recipe, tmp_path, resume=False)  # the recipe's train section becomes the TrainConfig
    assert cfg.report_to == ["tensorboard"] and cfg.gradient_checkpointing is True
