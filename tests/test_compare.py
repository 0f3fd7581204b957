"""`unlearn compare`: several methods on the small tiny world, one table (compare.json, compare.md) and
a forget-quality/utility plot (compare.png); names and overrides checked before anything runs; a
failing method leaves its error in the table and a non-zero exit.

Runs are kept short (2 steps, 4 generated tokens) on the small world, cached once per session.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.pipeline.compare import compare, load_compare_recipe, markdown, parse_method_overrides, plot
from unlearnkit.errors import UnlearnError
from unlearnkit.recipe import RECIPES_DIR, list_recipes, load_recipe
from unlearnkit.registry import METHODS
from unlearnkit.report import fmt_value

FAST = ["world.size=small", "train.steps=2", "eval.max_new_tokens=4"]
ROW_KEYS = {"method", "label", "status", "error", "forget_prob_before", "forget_prob_after", "forget_quality", "model_utility",
            "forgetting_kept", "worst_forget_prob", "worst_kept", "trainable_params", "trainable_fraction", "wall_s", "unlearn_s", "peak_rss_mb", "peak_accelerator_mb",
            "steps", "stopped", "run_dir", "after"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.usefixtures("isolated_env")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """Three methods in this process, through a compare recipe with per-method overrides; the third
    fails at run time (a missing checkpoint to resume from): (result, out, log messages)."""
    root = tmp_path_factory.mktemp("compare")
    spec = root / "three.yaml"
    spec.write_text(f"recipe: default\nmethods: [npo, grad_ascent, grad_diff]\noutput_dir: {root / 'out'}\n"
                    f"overrides: {{npo: [method.beta=0.2], grad_diff: ['train.resume_from={root / 'missing'}']}}\n")
    messages: list[str] = []
    result = compare(str(spec), None, FAST, progress=False, log=messages.append, isolate=False)
    return result, root / "out", messages


# ------------------------------------------------------------------------------ in-process comparison


def test_compare_json_rows(in_process):
    result, out, messages = in_process
    saved = json.loads((out / "compare.json").read_text())
    assert saved == {k: v for k, v in result.items() if k != "output_dir"}
    assert result["output_dir"] == str(out) and result["isolated"] is False and result["failed"] == ["grad_diff"]
    assert "running maximum" in result["memory"]
    assert [row["method"] for row in saved["rows"]] == ["npo", "grad_ascent", "grad_diff"]
    for row in saved["rows"][:2]:
        assert set(row) == ROW_KEYS and row["status"] == "ok" and row["error"] is None
        for key in ("forget_prob_before", "forget_prob_after", "forget_quality", "model_utility", "wall_s",
                    "peak_rss_mb"):
            assert is_number(row[key]), (row["method"], key)
        assert row["trainable_params"] > 0 and row["trainable_fraction"] == pytest.approx(1.0)
        assert row["steps"] == 2 and row["forget_prob_before"] == saved["start"]["forget_prob"]
        report = json.loads((out / row["run_dir"] / "report.json").read_text())
        assert report["method"] == row["method"] and report["after"]["forget_prob"] == row["forget_prob_after"]
        (relearn,) = [r for r in report["robustness"]["rows"] if r["attack"] == "relearn"]
        assert row["forgetting_kept"] == relearn["forgetting_kept"]["forget_prob"]  # the relearning attack's
        worst = report["robustness"]["worst_case"]
        assert row["worst_forget_prob"] == worst["metrics"]["forget_prob"] >= row["forget_prob_after"]
        assert row["worst_kept"] == worst["forgetting_kept"]["forget_prob"]
    npo = json.loads((out / "runs" / "npo" / "report.json").read_text())
    assert npo["recipe"]["method"]["beta"] == 0.2 and npo["recipe"]["world"]["size"] == "small"
    assert saved["method_overrides"]["npo"] == ["method.beta=0.2"] and saved["overrides"] == FAST
    failed = saved["rows"][2]
    assert set(failed) == ROW_KEYS and failed["status"] == "failed" and "train.resume_from" in failed["error"]
    assert failed["forget_quality"] is None and failed["run_dir"] is None and not (out / "runs" / "grad_diff").exists()
    assert any("[2/3] grad_ascent: done" in m for m in messages)
    assert any(m.startswith("[3/3] grad_diff: failed: train.resume_from") for m in messages)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary dirs left


def test_compare_md_table(in_process):
    result, out, _ = in_process
    text = (out / "compare.md").read_text()
    assert text == markdown({k: v for k, v in result.items() if k != "output_dir"})
    assert ("| method | forget prob (before → after) | forget quality | model utility | forgetting kept (relearn)"
            " | worst-case forget prob | worst-case kept | trainable params | wall s"
            " | peak RSS MB (running max) | error |") in text
    start = result["start"]
    assert f"| starting model | {fmt_value(start['forget_prob'])} | {fmt_value(start['forget_quality'])} |" in text
    assert f"| grad_diff | failed | — | — | — | — | — | — | — | — | {result['rows'][2]['error']} |" in text
    assert "Failed: grad_diff" in text
    for row in result["rows"][:2]:
        params = f"{row['trainable_params']:,} (100%)"
        assert (f"| {row['method']} | {fmt_value(row['forget_prob_before'])} → {fmt_value(row['forget_prob_after'])}"
                f" | {fmt_value(row['forget_quality'])} | {fmt_value(row['model_utility'])}"
                f" | {fmt_value(row['forgetting_kept'])} | {fmt_value(row['worst_forget_prob'])}"
                f" | {fmt_value(row['worst_kept'])} | {params} |") in text
    assert "npo also method.beta=0.2" in text and "running maximum" in text


def test_compare_png(in_process):
    _, out, _ = in_process
    assert_png(out / "compare.png")


# ---------------------------------------------------------------------- CLI: one process per method


def test_cli_runs_each_method_in_its_own_process(tmp_path, env):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["compare", "default", "--methods", "grad_ascent", *FAST, "-o", str(out), "-q"],
                                env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    saved = json.loads((out / "compare.json").read_text())
    (row,) = saved["rows"]
    assert saved["isolated"] is True and saved["failed"] == [] and row["status"] == "ok"
    report = json.loads((out / "runs" / "grad_ascent" / "report.json").read_text())
    assert row["peak_rss_mb"] == report["resources"]["peak_rss_mb"] > 0  # the child's own peak
    assert report["recipe"]["method"]["name"] == "grad_ascent" and report["train"]["steps"] == 2
    text = (out / "compare.md").read_text()
    assert "| peak RSS MB |" in text and "own process" in text and "| grad_ascent | " in text
    assert text.rstrip() in result.stdout  # the table is printed
    assert f"wrote {out}/compare.json" in result.stdout
    assert_png(out / "compare.png")


def test_cli_failing_method_exits_non_zero_after_writing_the_table(tmp_path, env):
    out = tmp_path / "fail"
    result = CliRunner().invoke(app, ["compare", "default", "--methods", "npo", *FAST, "--in-process", "-q",
                                      "--set", f"npo:train.resume_from={tmp_path / 'missing'}", "-o", str(out)], env=env)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 1 methods failed (npo); the table above says why"
    assert "| npo | failed |" in result.stdout and "train.resume_from" in result.stdout
    assert json.loads((out / "compare.json").read_text())["failed"] == ["npo"]
    assert_png(out / "compare.png")


# ----------------------------------------------------------------------------- errors before running


def test_bad_method_name_fails_before_anything_runs(tmp_path, env):
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["compare", "default", "--methods", "npo,npx", "-o", str(out)], env=env)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --methods: unknown method 'npx'; did you mean 'npo'?")
    assert not out.exists() and "Traceback" not in result.output


@pytest.mark.parametrize("methods, overrides, per_method, fragment", [
    (["npo", "npo"], [], None, "lists npo twice"),
    (["npo"], ["method.name=dpo"], None, "method.name cannot be overridden"),
    (["npo", "dpo"], [], {"npoo": ["method.beta=0.2"]}, "did you mean 'npo'"),
    (["npo", "grad_ascent"], [], {"npo": ["method.betta=0.2"]}, "npo: "),
    (None, [], None, "name the methods to compare"),
])
def test_plan_errors(tmp_path, methods, overrides, per_method, fragment):
    ran: list[str] = []
    with pytest.raises(UnlearnError, match=fragment.replace("(", r"\(")):
        compare("default", methods, overrides, tmp_path / "out", progress=False, log=ran.append,
                isolate=False, method_overrides=per_method)
    assert not ran and not (tmp_path / "out").exists()


def test_method_override_syntax():
    assert parse_method_overrides(["npo:method.beta=0.2", "npo:train.lr=1e-4", "dpo:method.beta=1"]) == {
        "npo": ["method.beta=0.2", "train.lr=1e-4"], "dpo": ["method.beta=1"]}
    for bad in ("method.beta=0.2", "npo:method.beta", "a=b:c"):
        with pytest.raises(UnlearnError, match="METHOD:section.field=value"):
            parse_method_overrides([bad])


# ---------------------------------------------------------------------------------- compare recipes


def test_shipped_compare_recipe():
    spec = load_compare_recipe(RECIPES_DIR / "compare" / "world.yaml")
    assert spec.recipe == "default" and spec.output_dir == "runs/compare"
    assert spec.methods == "all"  # every registered method: a new one joins the comparison without an edit
    assert list_recipes(compare=True) == ["compare/world"] and "compare/world" not in list_recipes()
    with pytest.raises(UnlearnError, match="run it with `unlearn compare compare/world`"):
        load_recipe("compare/world")


@pytest.mark.parametrize("text, fragment", [
    ("recipe: default\nmetods: [npo]\n", "unknown field 'metods'; did you mean 'methods'?"),
    ("recipe: default\nmethods: []\n", "field 'methods'"),
    ("methods: [npo]\noverrides: {dpo: [method.beta=1]}\n", "overrides for 'dpo', which is not in methods"),
    ("recipe: default\n", "a compare recipe needs 'methods'"),
])
def test_bad_compare_recipe(tmp_path, text, fragment):
    path = tmp_path / "cmp.yaml"
    path.write_text(text)
    with pytest.raises(UnlearnError, match=fragment):
        compare(str(path), None, [], tmp_path / "out", progress=False, log=lambda m: None, isolate=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- rendering, help


def test_plot_and_table_edge_cases(tmp_path):
    """A p-value of exactly 0 is still drawn (at a floor on the log axis); failures and GPU peaks get columns."""
    row = dict.fromkeys(ROW_KEYS)
    rows = [{**row, "method": "a", "status": "ok", "forget_prob_before": 0.9, "forget_prob_after": 0.1,
             "forget_quality": 0.0, "model_utility": 0.5, "forgetting_kept": 0.75, "worst_forget_prob": 0.2,
             "worst_kept": 0.5, "trainable_params": 1000, "trainable_fraction": 0.25,
             "wall_s": 1.5, "peak_rss_mb": 100.0, "peak_accelerator_mb": 50.0},
            {**row, "method": "b", "status": "failed", "error": "boom | bang", "wall_s": 0.2}]
    result = {"recipe": "default", "base_recipe": "default", "overrides": [], "method_overrides": {},
              "isolated": True, "start": None, "rows": rows, "failed": ["b"]}
    text = markdown(result)
    assert "| peak GPU MB | error |" in text and "| a | 0.9 → 0.1 | 0 | 0.5 | 0.75 | 0.2 | 0.5 | 1,000 (25%) | 1.5 | 100 | 50 |  |" in text
    assert "| b | failed | — | — | — | — | — | — | — | — | — | boom \\| bang |" in text
    plot(result, tmp_path / "p.png")
    plot({**result, "rows": rows[1:]}, tmp_path / "empty.png")  # nothing to plot: still a valid image
    assert_png(tmp_path / "p.png")
    assert_png(tmp_path / "empty.png")


def test_help_teaches():
    result = CliRunner().invoke(app, ["compare", "--help"])
    assert result.exit_code == 0
    for text in ("unlearn compare default --methods npo,grad_ascent", "unlearn compare compare/world", "--set",
                 "--in-process", "compare.png"):
        assert text in result.stdout


def test_the_bundled_compare_recipe_compares_every_registered_method():
    from unlearnkit.pipeline.compare import plan

    assert list(plan("compare/world", None)["runs"]) == METHODS.names()  # a new method joins without an edit
