"""Two processes (torchrun, gloo, CPU) under DDP, FSDP2 and DeepSpeed ZeRO-2 / ZeRO-3 train exactly what one process trains at the same global
batch: same losses, same final weights, one checkpoint set, and a resume equal to the uninterrupted run.

The strategy reaches the trainer as `accelerate launch --config_file configs/accelerate/X.yaml` hands it over:
through environment variables (the ones the shipped configs set).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unlearnkit.methods.base import ModelEdit
from unlearnkit.registry import METHODS
from unlearnkit.train.strategy import LAUNCH_ENV

WORKER = Path(__file__).with_name("strategy_worker.py")
STRATEGIES = LAUNCH_ENV  # what `accelerate launch` exports for each shipped config
# what each strategy refuses, with a line naming the configs that work (derived from the registry): multi-phase
# weight edits and GRUN's hooked representation edit under any sharding engine, and under ZeRO-3 also every
# objective that needs the whole frozen model during training
EDITS = {n for n in METHODS.names() if issubclass(METHODS.get(n), ModelEdit)} | {"grun"}
WHOLE_REFERENCE = {n for n in METHODS.names() if n not in EDITS and METHODS.build(n).needs_reference() == "model"}
INNER_BACKWARD = {n for n in METHODS.names() if n not in EDITS and METHODS.build(n).runs_inner_backward()}
REFUSED = {"ddp": set(), "fsdp2": EDITS, "deepspeed-zero2": EDITS | INNER_BACKWARD,
           "deepspeed-zero3": EDITS | WHOLE_REFERENCE | INNER_BACKWARD}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    env.pop("WORLD_SIZE", None)
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def _run(mode: str, out: Path, strategy: str | None) -> dict:
    if strategy and strategy.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is in the dev extras (pip install -e '.[dev]')")
    if strategy is None:
        cmd = [sys.executable, str(WORKER), mode, str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), mode, str(out)]
    proc = subprocess.run(cmd, env=_env(STRATEGIES.get(strategy, {})), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(Path(f"{out}.json").read_text())


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    root = tmp_path_factory.mktemp("alone")
    return {mode: _run(mode, root / mode, None) for mode in ("trajectory", "methods")}


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-4), name


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_two_processes_train_what_one_process_trains(strategy, alone, tmp_path):
    two = _run("trajectory", tmp_path / "two", strategy)
    assert two["strategy"] == strategy.split("-")[0] and two["world"] == 2
    for name in ("grad_diff", "npo"):
        one, run = alone["trajectory"][name], two[name]
        assert run["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6), name
        for a, b in zip(one["parts"], run["parts"]):
            assert b["forget"] == pytest.approx(a["forget"], rel=1e-5) and b["retain"] == pytest.approx(a["retain"], rel=1e-5)
        _same_weights(one["weights"], run["weights"])
        # one checkpoint per save, written by rank 0 only, and a resume equals the uninterrupted run
        assert run["checkpoints"] == ["step-2", "step-4"]
        assert run["resumed"] == pytest.approx(run["losses"], rel=1e-5, abs=1e-6)
        _same_weights(run["weights"], run["resumed_weights"])
        # each rank trained on its own retain rows, and together on the one-process rows
        ranks = [json.loads((tmp_path / f"two.rank{r}.json").read_text())[name] for r in (0, 1)]
        for step, (rows0, rows1) in enumerate(zip(ranks[0], ranks[1])):
            assert not set(map(tuple, rows0)) & set(map(tuple, rows1)), f"{name} step {step + 1}"
            assert sorted(rows0 + rows1) == sorted(one["seen"][step])
    # train.sam_rho and train.gru modify the global gradients: the same on every rank (DeepSpeed refuses them)
    for key, field in (("sam", "train.sam_rho"), ("gru", "train.gru")):
        if strategy.startswith("deepspeed"):
            assert f"{field} needs" in two[key]["error"]
        else:
            assert two[key]["losses"] == pytest.approx(alone["trajectory"][key]["losses"], rel=1e-5, abs=1e-6)
            _same_weights(alone["trajectory"][key]["weights"], two[key]["weights"])


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_method_under_two_processes(strategy, alone, tmp_path):
    """DDP: every registered method; FSDP2 and ZeRO: every per-batch method and LoRA, and a clear error naming the
    configs that work for the rest (model edits, GRUN; under ZeRO-3 also a method needing the whole reference)."""
    two = _run("methods", tmp_path / "methods", strategy)
    for name, one in alone["methods"].items():
        if name in ("strategy", "world"):
            continue
        run = two[name]
        if "error" in run:
            assert name in REFUSED[strategy] and "configs/accelerate/" in run["error"], (name, run["error"])
            continue
        assert "error" not in one, (name, one)
        assert run["losses"] == pytest.approx(one["losses"], rel=1e-4, abs=1e-5), name
        _same_weights(one["weights"], run["weights"])
    assert {n for n, r in two.items() if isinstance(r, dict) and "error" in r} == REFUSED[strategy]
