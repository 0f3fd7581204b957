"""End to end on the small tiny world (6 authors, 2-layer model): `unlearn run` writes a report and
a model that `unlearn eval` reloads to the same numbers; repeated runs reuse the cached world and
the cached evaluation of the starting model; every method and LoRA run through the Python API.

The world is built once per session into a temporary cache (shared with tests/test_cli.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.pipeline import run
from unlearnkit.recipe import load_recipe
from unlearnkit.registry import METHODS
from unlearnkit.report import fmt_value

HEADLINE = ("forget_prob", "forget_rouge", "forget_truth_ratio", "forget_quality", "model_utility")
SMALL = "world.size=small"


pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, env):
    """`unlearn run world.size=small --out DIR -q` in a real process: (DIR, report, process)."""
    out = tmp_path_factory.mktemp("pipeline") / "run"
    proc = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "run", SMALL, "--out", str(out), "-q"],
                          env={**os.environ, **env}, cwd=out.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text()), proc


def quiet_run(overrides: list[str], out: Path) -> dict:
    return run(load_recipe("default", [SMALL, *overrides]), out, progress=False, log=lambda message: None)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------- the report


def test_run_writes_report_and_model(first_run):
    out, report, proc = first_run
    assert (out / "report.json").is_file() and (out / "report.md").is_file()
    assert (out / "model" / "config.json").is_file()
    assert any((out / "model").glob("*.safetensors"))
    assert not list(out.parent.glob(".run.*"))  # no temporary directories left behind
    assert f"wrote {out}/report.json" in proc.stdout
    assert "forget probability" in proc.stdout  # the table is printed


def test_report_json_contents(first_run):
    _, report, _ = first_run
    assert report["method"] == "npo" and report["benchmark"] == "world" and report["model"] == "world:target"
    for when in ("before", "after"):
        for key in HEADLINE:
            assert is_number(report[when][key]), (when, key, report[when].get(key))
    assert 0 <= report["after"]["forget_quality"] <= 1
    assert report["recipe"] == load_recipe("default", [SMALL]).resolved()
    assert report["recipe"]["world"]["size"] == "small"
    assert report["recipe"]["method"]["retain_loss"] == "nll"  # method defaults are recorded
    timings = report["timings"]
    for key in ("load_data_and_world", "load_model", "evaluate_before", "unlearn", "save_model",
                "evaluate_after", "total"):
        assert is_number(timings[key]) and timings[key] >= 0, key
    train = report["train"]
    assert train["steps"] > 0 and train["stopped"] is None
    assert train["trainable_params"] == train["total_params"] > 0
    assert train["trainable_fraction"] == pytest.approx(1.0)
    assert is_number(train["first_loss"]) and is_number(train["last_loss"])
    forget = report["per_sample"]["after"]["forget"]
    assert len(report["forget_truth_ratios"]) == len(forget["prob"]) == len(forget["question"]) > 0
    assert report["per_sample"]["before"]["forget"]["question"] == forget["question"]


def test_report_md_has_before_after_table(first_run):
    out, report, _ = first_run
    text = (out / "report.md").read_text()
    assert "| metric | before | after | reading |" in text
    before, after = report["before"]["forget_prob"], report["after"]["forget_prob"]
    assert f"| forget probability | {fmt_value(before)} | {fmt_value(after)} |" in text
    for label in ("forget ROUGE-L recall", "forget truth ratio", "forget quality (KS p)", "model utility"):
        assert f"| {label} |" in text


def test_unlearning_lowers_forget_probability(first_run):
    _, report, _ = first_run
    assert report["after"]["forget_prob"] < report["before"]["forget_prob"]
    assert report["after"]["forget_rouge"] <= report["before"]["forget_rouge"]


# ---------------------------------------------------------------------------- reload with `eval`


def test_saved_model_reloads_with_eval(first_run, tmp_path, env):
    out, report, _ = first_run
    # the run's eval settings (default recipe), so the retain model's cached evaluation is reused
    result = CliRunner().invoke(app, ["eval", "--model", str(out / "model"), "--benchmark", "world",
                                      "--world-size", "small", "--max-new-tokens", "40", "--batch-size", "64",
                                      "--out", str(tmp_path / "eval"), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert (tmp_path / "eval" / "eval.md").is_file()
    assert evaluated["metrics"]["forget_prob"] == pytest.approx(report["after"]["forget_prob"], abs=1e-6)
    assert evaluated["metrics"]["forget_truth_ratio"] == pytest.approx(report["after"]["forget_truth_ratio"], abs=1e-5)
    assert evaluated["metrics"]["retain_prob"] == pytest.approx(report["after"]["retain_prob"], abs=1e-6)
    for key in ("forget_rouge", "forget_quality", "model_utility"):  # same settings: same generations
        assert evaluated["metrics"][key] == pytest.approx(report["after"][key], abs=1e-6), key


def test_eval_of_world_target_matches_before(first_run, tmp_path, env):
    _, report, _ = first_run
    result = CliRunner().invoke(app, ["eval", "--model", "world:target", "--benchmark", "world",
                                      "--world-size", "small", "--max-new-tokens", "40", "--batch-size", "64",
                                      "--out", str(tmp_path / "eval"), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    for key in HEADLINE:
        assert evaluated["metrics"][key] == pytest.approx(report["before"][key], abs=1e-6), key


def test_forget_quality_from_retain_model_and_from_retain_logs(first_run, tmp_path, env):
    """--retain-model (evaluated once, cached) and --retain-logs (an earlier eval.json) give the same
    forget quality as the run, which took the world's retain model."""
    out, report, _ = first_run
    common = ["eval", "--model", str(out / "model"), "--benchmark", "world", "--world-size", "small",
              "--max-new-tokens", "40", "--batch-size", "64", "-q"]
    retain_eval = tmp_path / "retain_eval"
    result = CliRunner().invoke(app, ["eval", "--model", "world:retain", "--benchmark", "world", "--world-size",
                                      "small", "--max-new-tokens", "40", "--out", str(retain_eval), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    for extra in (["--retain-model", "world:retain"], ["--retain-logs", str(retain_eval / "eval.json")]):
        result = CliRunner().invoke(app, [*common, *extra, "--out", str(tmp_path / extra[0][2:])], env=env)
        assert result.exit_code == 0, (extra, result.output, result.exception)
        metrics = json.loads((tmp_path / extra[0][2:] / "eval.json").read_text())["metrics"]
        assert metrics["forget_quality"] == pytest.approx(report["after"]["forget_quality"], abs=1e-9), extra
    missing = CliRunner().invoke(app, [*common, "--retain-logs", str(tmp_path / "nope.json"),
                                       "--out", str(tmp_path / "x")], env=env)
    assert missing.exit_code == 2 and "retain_logs" in missing.output and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------- the cache


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_second_run_reuses_world_and_before_evaluation(first_run, cache_dir, tmp_path):
    _, report, _ = first_run
    worlds = [p for p in cache_dir.iterdir() if p.is_dir() and p.name.startswith("world-") and p.name.endswith("-small")]
    assert len(worlds) == 1, list(cache_dir.iterdir())
    world = worlds[0]
    assert (world / "info.json").is_file()
    assert {p.name.split("-")[0] for p in (world / "evals").glob("*.json")} >= {"target"}  # the starting model
    references = cache_dir / "retain_evals"  # the retain model's truth ratios and Min-K% AUC, by content
    assert len(list(references.glob("*.json"))) >= 2
    files = (_files(world), _files(references))

    second = quiet_run(["train.steps=1"], tmp_path / "second")
    assert (_files(world), _files(references)) == files  # nothing rebuilt, nothing re-evaluated
    assert second["before"] == report["before"]  # the cached evaluation of the starting model
    assert second["timings"]["load_data_and_world"] < 3.0
    assert second["timings"]["evaluate_before"] < 1.0


def test_failed_run_keeps_previous_output(first_run, tmp_path):
    from unlearnkit.errors import UnlearnError

    out = tmp_path / "out"
    quiet_run(["train.steps=1"], out)
    report = (out / "report.json").read_bytes()
    with pytest.raises(UnlearnError, match="train.resume_from"):
        quiet_run(["train.steps=1", f"train.resume_from={tmp_path / 'missing'}"], out)
    assert (out / "report.json").read_bytes() == report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ---------------------------------------------------------------------------------- every method


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_method_runs_on_small_world(first_run, tmp_path, method):
    report = quiet_run([f"method.name={method}", "train.steps=3"], tmp_path / method)
    assert report["method"] == method
    assert report["recipe"]["method"]["name"] == method
    assert report["method_label"] == ("ERU (reconstructed)" if method == "eru" else method)
    assert 0 < report["trainable_fraction"] <= 1 and report["trainable_params"] > 0
    assert report["train"]["steps"] == 3
    assert is_number(report["train"]["first_loss"]) and is_number(report["train"]["last_loss"])
    for key in HEADLINE:
        assert is_number(report["after"][key]), key
    assert (tmp_path / method / "report.json").is_file()
    assert (tmp_path / method / "model" / "config.json").is_file()


def test_lora_trains_a_fraction_and_saves_a_merged_model(first_run, tmp_path):
    report = quiet_run(["model.lora.r=4", "train.steps=3"], tmp_path / "lora")
    assert report["recipe"]["model"]["lora"]["r"] == 4
    assert 0 < report["trainable_fraction"] < 1
    assert report["train"]["trainable_fraction"] == report["trainable_fraction"]
    assert report["train"]["trainable_params"] < report["train"]["total_params"]
    for key in HEADLINE:
        assert is_number(report["after"][key]), key
    model_dir = tmp_path / "lora" / "model"
    assert (model_dir / "config.json").is_file()
    assert not (model_dir / "adapter_config.json").exists()  # adapters are merged into a plain model


# ------------------------------------------------------------------------------- TOFU evaluation


def test_eval_world_model_on_tofu_runs_end_to_end(first_run, tmp_path, env):
    from unlearnkit.data.tofu import shared_tofu_dir

    tofu = shared_tofu_dir()
    if tofu is None or not (tofu / "forget01_perturbed.json").is_file():
        pytest.skip("shared/data/tofu is not present")
    out, _, _ = first_run
    result = CliRunner().invoke(app, ["eval", "--benchmark", "tofu", "--data-dir", str(tofu), "--forget-split",
                                      "forget01", "--model", str(out / "model"), "--max-new-tokens", "4",
                                      "--out", str(tmp_path / "tofu"), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    evaluated = json.loads((tmp_path / "tofu" / "eval.json").read_text())
    metrics = evaluated["metrics"]
    assert evaluated["benchmark"] == "tofu"
    for key in ("forget_prob", "forget_rouge", "forget_truth_ratio", "model_utility"):
        assert is_number(metrics[key]), key
    assert metrics["forget_quality"] is None  # no retain model given
    assert len(evaluated["forget_truth_ratios"]) == 40  # TOFU forget01: 40 questions


def test_run_on_real_tofu_files_with_a_local_model(first_run, tmp_path):
    """`unlearn run` with data.benchmark=tofu: TOFU forget01/retain99 from local files, a model from a
    local directory (the unlearned world model stands in for a TOFU-finetuned one), forget quality
    against a retain model given by path."""
    from unlearnkit.data.tofu import shared_tofu_dir

    tofu = shared_tofu_dir()
    if tofu is None or not (tofu / "forget01_perturbed.json").is_file():
        pytest.skip("shared/data/tofu is not present")
    out, _, _ = first_run
    model = str(out / "model")
    report = run(load_recipe("default", [f"model.name={model}", "data.benchmark=tofu", f"data.data_dir={tofu}",
                                         "data.forget_split=forget01", "train.steps=2", "eval.max_new_tokens=4",
                                         f"eval.retain_model={model}"]),
                 tmp_path / "tofu_run", progress=False, log=lambda message: None)
    assert report["benchmark"] == "tofu"
    assert len(report["forget_truth_ratios"]) == 40
    # the retain model is the starting model here, so before it is indistinguishable from it
    assert report["before"]["forget_quality"] == pytest.approx(1.0)
    assert 0 <= report["after"]["forget_quality"] <= 1


def test_chat_format_runs_end_to_end(first_run, tmp_path):
    """data.format=chat uses the tokenizer's chat template (the world tokenizer has one)."""
    report = quiet_run(["data.format=chat", "train.steps=3", "eval.before=false"], tmp_path / "chat")
    assert report["recipe"]["data"]["format"] == "chat"
    assert report["before"] is None
    assert is_number(report["after"]["forget_prob"])
