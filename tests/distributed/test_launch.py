"""The README's multi-process command: `accelerate launch --config_file configs/accelerate/X.yaml --num_processes 2
-m unlearnkit.cli run default` on this CPU, with the shipped configs. One report, printed once, and the model a
one-process run trains at the same global batch (up to the per-rank token means of rows of different lengths)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
RUN = ["run", "default", "world.size=small", "train.steps=4", "attacks.relearn.enabled=false", "eval.before=false",
       "eval.metrics=[forget_prob]", "-q"]


def _env(env: dict) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        clean.pop(key, None)
    return {**clean, **env}


@pytest.fixture(scope="module")
def alone(env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("alone") / "out"
    proc = subprocess.run([sys.executable, "-m", "unlearnkit.cli", *RUN, "train.batch_size=8", "--out", str(out)],
                          env=_env(env), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ddp", "fsdp2", "deepspeed-zero2", "deepspeed-zero3"])
def test_accelerate_launch_runs_the_default_recipe_on_two_cpu_processes(config, alone, env, tmp_path):
    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is in the dev extras (pip install -e '.[dev]')")
    out = tmp_path / "out"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "configs" / "accelerate" / f"{config}.yaml"), "--num_processes", "2", "-m", "unlearnkit.cli"]
    proc = subprocess.run([*launch, *RUN, "train.batch_size=4", "train.mixed_precision=no", "--out", str(out)],
                          env=_env(env), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 prints; rank 1 computes alongside it
    report, single = (json.loads((d / "report.json").read_text()) for d in (out, alone))
    assert report["train"]["steps"] == single["train"]["steps"] == 4
    # rows differ in length here, so each rank's token mean only approximates the global one (the exact
    # equivalence at equal lengths is tests/distributed/test_strategies.py)
    assert report["train"]["last_loss"] == pytest.approx(single["train"]["last_loss"], rel=2e-3)
    assert report["after"]["forget_prob"] == pytest.approx(single["after"]["forget_prob"], rel=0.05, abs=1e-3)
    weights, expected = (load_file(str(d / "model" / "model.safetensors")) for d in (out, alone))
    assert weights.keys() == expected.keys()  # the consolidated model, saved once
