"""Divergence: non-finite logits trip the training guard; a stopped run says so everywhere and exits 4;
evaluation of a broken model reports non-finite numbers as such instead of crashing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unlearnkit.cli import EXIT_DIVERGED, app

pytestmark = pytest.mark.usefixtures("isolated_env")


def strict_json(path: Path) -> dict:
    def refuse(constant):
        raise AssertionError(f"{path.name} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_logits_stop_training_even_when_the_loss_is_finite(train_tiny, tiny_model):
    from unlearnkit.methods.grad_ascent import GradAscent

    start = {k: v.clone() for k, v in tiny_model.state_dict().items()}

    def poison(_module, _args, output):  # the last position predicts nothing: outside every loss
        output.logits[:, -1, 0] = float("inf")

    tiny_model.register_forward_hook(poison)
    result = train_tiny(GradAscent(), 3, model=tiny_model)
    assert result.stopped == "non-finite logits at step 1; kept the weights of step 0"
    assert result.steps == 0 and not result.history
    assert all(torch.equal(v, start[k]) for k, v in result.model.state_dict().items())


def test_a_diverged_run_says_so_everywhere_and_exits_4(env, tmp_path):
    out = tmp_path / "out"
    # Adam's first steps move every weight by about lr: 1e30 overflows float32 within a few steps on any stack
    result = CliRunner().invoke(app, ["run", "world.size=small", "method.name=grad_ascent", "train.lr=1e30",
                                      "train.steps=40", "train.max_grad_norm=null", "attacks.relearn.enabled=false",
                                      "--out", str(out), "-q"], env=env)
    assert result.exit_code == EXIT_DIVERGED == 4, (result.output, result.exception)
    assert "diverged: the divergence guard stopped training" in result.stderr
    report = strict_json(out / "report.json")
    stopped = report["train"]["stopped"]
    assert stopped and "kept the weights of step" in stopped and report["train"]["steps"] < 40
    assert f"**Training stopped early:** {stopped}" in (out / "report.md").read_text()
    assert "Training stopped early (divergence guard)" in (out / "report.html").read_text()
    assert (out / "model" / "model.safetensors").is_file()  # the last complete step's weights are kept
    assert report["non_finite"] and all(report["after"][p.split(".", 1)[1]] is None
                                        for p in report["non_finite"] if p.startswith("after."))


def test_evaluating_a_broken_model_reports_non_finite_scores(env, tmp_path, cache_dir):
    from unlearnkit.model import load_model, load_tokenizer
    from unlearnkit.world.build import ensure_world

    world = ensure_world(cache_dir, size="small", progress=False, log=lambda m: None)
    model = load_model(str(world.target_dir))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e18)  # finite weights whose gradients (and some scores) overflow
    broken = tmp_path / "broken"
    model.save_pretrained(broken)
    load_tokenizer(str(world.target_dir)).save_pretrained(broken)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--model", str(broken), "-b", "world", "--world-size", "small",
                                      "--max-new-tokens", "8", "--out", str(out), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    evaluated = strict_json(out / "eval.json")
    assert evaluated["non_finite"], "expected some non-finite scores"
    named = [p for p in evaluated["non_finite"] if p.startswith("metrics.")]
    for path in named:
        assert evaluated["metrics"][path.split(".", 1)[1]] is None
        assert f"| {path.split('.', 1)[1]} | non-finite |" in (out / "eval.md").read_text()
