"""`eval.metrics` runs only the passes the chosen metrics need (OpenUnlearning's names accepted);
`unlearn run --no-eval` evaluates nothing; `unlearn ls benchmarks` lists every registered benchmark."""

from __future__ import annotations

import json

import pytest

import unlearnkit.benchmarks.suite as suite
from unlearnkit.registry import BENCHMARKS

pytestmark = pytest.mark.usefixtures("isolated_env")

RUN = ("run", "world.size=small", "train.steps=2", "attacks.relearn.enabled=false", "-q")


def test_selected_metrics_and_only_their_passes(cli, tmp_path):
    out = tmp_path / "out"
    result = cli(*RUN, "eval.metrics=[forget_Q_A_Prob, mia_min_k, retain_Q_A_ROUGE]", "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads((out / "report.json").read_text())
    for which in ("before", "after"):
        assert set(report[which]) == {"forget_prob", "mia_min_k", "retain_rouge"}
    samples = report["per_sample"]["after"]
    assert "generation" in samples["retain"] and "generation" not in samples["forget"]  # only retain decoded
    assert set(samples) == {"forget", "retain", "privacy"}  # real authors and world facts never ran


def test_an_unknown_metric_is_refused_with_a_did_you_mean(cli, tmp_path):
    result = cli(*RUN, "eval.metrics=[forget_probb]", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "unknown metric 'forget_probb'" in result.stderr
    assert "did you mean 'forget_prob'" in result.stderr


def test_no_eval_only_unlearns(cli, tmp_path, monkeypatch):
    calls = []
    real = suite.evaluate
    monkeypatch.setattr(suite, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "out"
    result = cli(*RUN[:-2], "attacks.relearn.enabled=true", "--no-eval", "--out", out, "-q")
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads((out / "report.json").read_text())
    assert report["before"] is None and report["after"] is None and "robustness" not in report
    assert (out / "model" / "model.safetensors").is_file() and report["train"]["steps"] == 2
    assert calls == [] and "not evaluated" in result.stdout


def test_ls_benchmarks_lists_the_registry(cli):
    result = cli("ls", "benchmarks")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert listed == BENCHMARKS.names() and {"tofu", "muse", "wmdp", "mmlu", "world", "safety"} <= set(listed)
