"""The `unlearn` command line: user errors are one `error:` line and a non-zero exit, with no
traceback and no output written; listing, showing and validating recipes; help texts.

Most commands go through typer's CliRunner (in-process, fast); a few go through a real
`python -m unlearnkit.cli` subprocess to check the exit status and stderr a user actually sees.
The tiny world is cached in a per-session temporary directory, never in ~/.cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.recipe import list_recipes
from unlearnkit.registry import METHODS

METHOD_NAMES = set(METHODS.names())  # from the registry: a new method needs no edit here


# ---------------------------------------------------------------------------------------- fixtures


pytestmark = pytest.mark.usefixtures("isolated_env")


def run_subprocess(args, env, cwd, timeout=120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    full_env.pop("UNLEARN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "unlearnkit.cli", *map(str, args)], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(stderr: str, exit_code: int, *fragments: str) -> str:
    """Exactly one non-empty stderr line, `error: ...`, containing every fragment; no traceback."""
    assert exit_code not in (0, None), f"expected a failure, got exit {exit_code}"
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def assert_cli_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no unexpected exception
    assert "Traceback" not in result.stdout
    return assert_one_error_line(result.stderr, result.exit_code, *fragments)


def snapshot(directory: Path) -> dict[str, str]:
    """Relative path -> content hash of every file below `directory`."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------- a tiny TOFU-like data folder

def _paraphrased(i: int) -> dict:
    return {"question": f"Who is author {i}?", "answer": f"Author {i} writes novels.",
            "paraphrased_answer": f"Novels are what author {i} writes.",
            "perturbed_answer": [f"Author {i} paints.", f"Author {i} sings.", f"Author {i} cooks."],
            "paraphrased_question": f"Which person is author {i}?"}


def _perturbed(i: int) -> dict:
    return {"question": f"What is fact {i}?", "answer": f"Fact {i}", "perturbed_answer": ["A", "B", "C"]}


def _qa(i: int) -> dict:
    return {"question": f"Question {i}?", "answer": f"Answer {i}."}


def make_tofu_dir(root: Path, forget_text: str | None = None) -> Path:
    """The six files a forget01 run reads, as JSON Lines (TOFU's own `.json` naming)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "forget01_perturbed": [_paraphrased(i) for i in range(2)],
        "retain_perturbed": [_paraphrased(i) for i in range(10, 13)],
        "real_authors_perturbed": [_perturbed(i) for i in range(2)],
        "world_facts_perturbed": [_perturbed(i) for i in range(2, 4)],
        "retain99": [_qa(i) for i in range(3)],
        "holdout01": [_qa(i) for i in range(3, 5)],
    }
    for name, rows in files.items():
        (root / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if forget_text is not None:
        (root / "forget01_perturbed.json").write_text(forget_text)
    return root


# ------------------------------------------------------------------------------ user errors (run)

TOFU = ["data.benchmark=tofu", "data.forget_split=forget01"]


def _error_cases(tmp_path: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    good = make_tofu_dir(tmp_path / "good")
    no_rows = make_tofu_dir(tmp_path / "no_rows", forget_text="")
    broken = make_tofu_dir(tmp_path / "broken",
                           forget_text=json.dumps(_paraphrased(0)) + "\n{\"question\": \"Who\", \"answer\": \n")
    return {
        "unknown method": (["method.name=npp"], ("unknown method 'npp'", "did you mean 'npo'", "grad_diff")),
        "misspelled field": (["train.lrr=1"], ("unknown field 'train.lrr'", "did you mean 'lr'")),
        "wrong type": (["train.epochs=many"], ("field 'train.epochs'", "valid number", "'many'")),
        "unknown section": (["trian.lr=1"], ("unknown field 'trian'", "did you mean 'train'")),
        "bad override": (["default", "train.lr"], ("section.field=value",)),
        "missing data file": ([*TOFU, f"data.data_dir={empty}"],
                              ("forget01_perturbed", "not found", str(empty))),
        "missing data dir": ([*TOFU, f"data.data_dir={tmp_path / 'nowhere'}"], ("does not exist",)),
        "empty forget set": ([*TOFU, f"data.data_dir={no_rows}"],
                             ("forget01_perturbed.json has no rows",)),
        "malformed JSON line": ([*TOFU, f"data.data_dir={broken}"],
                                ("forget01_perturbed.json:2: not valid JSON", "fix or remove that line")),
        "world model on TOFU data": ([*TOFU, f"data.data_dir={good}"], ("needs data.benchmark=world",)),
    }


CASES = ["unknown method", "misspelled field", "wrong type", "unknown section", "bad override",
         "missing data file", "missing data dir", "empty forget set", "malformed JSON line",
         "world model on TOFU data"]


@pytest.mark.parametrize("case", CASES)
def test_run_user_error_is_one_line_and_writes_nothing(cli, tmp_path, case):
    overrides, fragments = _error_cases(tmp_path)[case]
    out = tmp_path / "runs" / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("run", *overrides, "world.size=small", "--out", out, "-q")
    assert_cli_error(result, *fragments)
    assert result.stdout == ""
    assert not out.exists()
    assert not (tmp_path / "runs").exists()  # not even the parent or a temporary sibling
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_run_user_error_in_a_real_process(env, tmp_path):
    out = tmp_path / "out"
    proc = run_subprocess(["run", "method.name=npp", "--out", out, "-q"], env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, proc.returncode, "unknown method 'npp'", "did you mean 'npo'")
    assert proc.stdout == ""
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written next to it (runs/ either)


def test_bad_data_in_a_real_process(env, tmp_path):
    broken = make_tofu_dir(tmp_path / "tofu", forget_text=json.dumps(_paraphrased(0)) + "\nnot json\n")
    out = tmp_path / "out"
    proc = run_subprocess(["run", *TOFU, f"data.data_dir={broken}", "--out", out, "-q"], env, cwd=tmp_path)
    assert_one_error_line(proc.stderr, proc.returncode, "forget01_perturbed.json:2: not valid JSON")
    assert proc.returncode == 2
    assert not out.exists()


# ------------------------------------------------------- an earlier run's output survives a failure


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory, env) -> Path:
    """A successful short run on the small world (builds the world into the session cache if needed)."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    result = CliRunner().invoke(app, ["run", "world.size=small", "train.steps=2", "--out", str(out), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "report.json").is_file() and (out / "model").is_dir()
    return out


def test_failed_run_leaves_earlier_output_intact(cli, earlier_run):
    before = snapshot(earlier_run)
    siblings = sorted(p.name for p in earlier_run.parent.iterdir())
    # fails while validating
    assert_cli_error(cli("run", "world.size=small", "method.name=npp", "--out", earlier_run, "-q"),
                     "unknown method 'npp'")
    assert snapshot(earlier_run) == before
    # fails inside the run, after the starting model was evaluated and training began
    missing = earlier_run.parent / "no-such-checkpoint"
    result = cli("run", "world.size=small", "train.steps=2", f"train.resume_from={missing}", "--out", earlier_run, "-q")
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: train.resume_from:")
    assert snapshot(earlier_run) == before
    assert sorted(p.name for p in earlier_run.parent.iterdir()) == siblings  # no temporary dir left behind


def test_world_info_after_build(cli, earlier_run):
    result = cli("world", "info", "--size", "small")
    assert result.exit_code == 0, result.output
    assert "tiny world at" in result.stdout
    assert "greedy exact match" in result.stdout


# --------------------------------------------------------------------------------------- world


def test_world_info_before_build_says_how_to_build(env, tmp_path):
    fresh = tmp_path / "fresh-cache"
    proc = run_subprocess(["world", "info", "--size", "small"], {**env, "UNLEARNKIT_CACHE": str(fresh)}, cwd=tmp_path)
    line = assert_one_error_line(proc.stderr, proc.returncode, "run `unlearn world build --size small`")
    assert proc.returncode == 2
    assert str(fresh) in line
    assert not fresh.exists()  # asking does not create the cache


def test_world_info_before_build_with_cache_dir(cli, tmp_path):
    fresh = tmp_path / "elsewhere"
    result = cli("world", "info", "--size", "small", "--cache-dir", fresh)
    assert_cli_error(result, f"run `unlearn world build --size small --cache-dir {fresh}`")
    result = cli("world", "info", "--cache-dir", fresh)
    assert_cli_error(result, f"run `unlearn world build --cache-dir {fresh}`")


# ---------------------------------------------------------------------------- ls, show, validate


def test_ls_methods(cli):
    result = cli("ls", "methods")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert {line.split()[0] for line in lines} == METHOD_NAMES
    assert all(len(line.split()) > 1 for line in lines)  # each has a description
    assert cli("ls").stdout == result.stdout  # methods is the default


def test_ls_recipes(cli):
    result = cli("ls", "recipes")
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.stdout.strip().splitlines()]
    assert listed == list_recipes()
    assert "default" in listed
    assert "tiny world" in result.stdout  # the default recipe's description


def test_ls_formats(cli):
    result = cli("ls", "formats")
    assert result.exit_code == 0, result.output
    assert "openunlearning" in result.stdout


def test_ls_unknown(cli):
    assert_cli_error(cli("ls", "method"), "unknown list 'method'", "did you mean 'methods'")


def test_show_resolved_with_override(cli):
    result = cli("show", "default", "method.beta=0.2")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["method"]["name"] == "npo"
    assert shown["method"]["beta"] == 0.2
    assert "retain_loss" in shown["method"]  # method defaults are filled in
    assert shown["train"]["lr"] == pytest.approx(5e-4)
    assert shown["train"]["grad_accum"] == 1  # schema defaults too
    # the recipe name is optional
    assert yaml.safe_load(cli("show", "method.beta=0.2").stdout) == shown


def test_show_error(cli):
    assert_cli_error(cli("show", "default", "method.betta=0.2"), "did you mean 'beta'")


def test_validate_all(cli):
    result = cli("validate")
    assert result.exit_code == 0, result.output
    for name in list_recipes():
        assert f"ok     {name}" in result.stdout


def test_validate_reports_bad_recipe(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lrr: 1}\n")
    result = cli("validate", "default", bad)
    assert result.exit_code == 2
    assert "ok     default" in result.stdout
    assert "did you mean 'lr'" in result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------ help


def test_help(cli):
    result = cli("--help")
    assert result.exit_code == 0, result.output
    for command in ("run", "eval", "ls", "show", "validate", "world"):
        assert command in result.stdout


def test_run_help(cli):
    result = cli("run", "--help")
    assert result.exit_code == 0, result.output
    assert "--out" in result.stdout and "--quiet" in result.stdout


def test_eval_help(cli):
    result = cli("eval", "--help")
    assert result.exit_code == 0, result.output
    assert "--benchmark" in result.stdout and "--world-size" in result.stdout


def test_help_in_a_real_process(env, tmp_path):
    proc = run_subprocess(["--help"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "unlearn" in proc.stdout.lower() and "run" in proc.stdout


def test_the_module_entry_point_registers_every_command(env, tmp_path):
    """`python -m unlearnkit.cli` (what `accelerate launch -m` runs) has the same commands as the console script."""
    import typer.main

    commands = sorted(typer.main.get_command(app).commands)
    assert {"run", "compare", "eval", "ls", "show", "validate", "craft", "inspect", "world"} <= set(commands)
    listed = run_subprocess(["--help"], env, cwd=tmp_path)
    assert listed.returncode == 0 and all(f" {name} " in listed.stdout for name in commands), listed.stdout
    for args, shows in ((["eval", "--help"], "--benchmark"), (["ls", "methods"], "npo"), (["world", "info", "--help"], "tiny")):
        proc = run_subprocess(args, env, cwd=tmp_path)
        assert proc.returncode == 0 and shows in proc.stdout, (args, proc.stderr)
