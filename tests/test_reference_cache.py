"""The retain model's reference evaluation is cached by content: run again, it is reused; retrained at the same
path (new weights), it is evaluated again — never served stale because the name did not change."""

from __future__ import annotations

import shutil

import pytest
import torch

import unlearnkit.benchmarks.suite as suite

pytestmark = pytest.mark.usefixtures("isolated_env")


def test_a_changed_model_file_invalidates_the_cached_reference(cli, tmp_path, cache_dir, monkeypatch):
    from unlearnkit.model import load_model
    from unlearnkit.world.build import ensure_world

    retain = tmp_path / "retain"
    shutil.copytree(ensure_world(cache_dir, size="small", progress=False, log=lambda m: None).retain_dir, retain)
    asked = []
    real = suite.evaluate

    def spy(*args, **kwargs):
        asked.append(kwargs.get("metrics"))
        return real(*args, **kwargs)

    monkeypatch.setattr(suite, "evaluate", spy)
    command = ("run", "world.size=small", "train.steps=1", "attacks.relearn.enabled=false", "eval.before=false",
               f"eval.retain_model={retain}", "-q")

    def reference_evaluations(out: str) -> int:
        before = len(asked)
        result = cli(*command, "--out", tmp_path / out)
        assert result.exit_code == 0, (result.output, result.exception)
        return sum(m == ["forget_truth_ratio"] for m in asked[before:])

    def retrain(scale: float) -> None:  # new weights at the same path
        model = load_model(str(retain))
        with torch.no_grad():
            model.lm_head.weight.mul_(scale)
        model.save_pretrained(retain)

    retrain(0.9)  # weights of its own (a copy of the world's retain model is served from the world's cache)
    assert reference_evaluations("first") == 1
    assert reference_evaluations("second") == 0  # same weights, same data: from the cache
    retrain(0.5)
    assert reference_evaluations("third") == 1
