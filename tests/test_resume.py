"""Interrupted runs: Ctrl-C checkpoints the current step, `--resume` continues and reproduces the
uninterrupted run exactly, a killed run's partial folder is resumed too, and stale partial folders are
reported (refused without --resume, discarded with --restart, removed when they hold no checkpoint)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

import unlearnkit.train.loop as train_module
from unlearnkit.cli import app

pytestmark = pytest.mark.usefixtures("isolated_env")

STEPS = 6
RUN = ("run", "world.size=small", f"train.steps={STEPS}", "train.lr=5e-4", "attacks.relearn.enabled=false",
       "eval.before=false", "-q")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env) -> Path:
    out = tmp_path_factory.mktemp("whole") / "out"
    result = CliRunner().invoke(app, [*RUN, "--out", str(out)], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def weights(out: Path) -> dict:
    return load_file(str(out / "model" / "model.safetensors"))


def same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)  # bit for bit
    la = [json.loads(line) for line in (a / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(line) for line in (b / "train_log.jsonl").read_text().splitlines()]
    assert la == lb and len(la) == STEPS


def test_ctrl_c_checkpoints_the_step_and_resume_reproduces_the_uninterrupted_run(cli, tmp_path, uninterrupted,
                                                                                   monkeypatch):
    calls = {"n": 0}
    original = train_module._one_step

    def press_ctrl_c_during_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, in the middle of step 3
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "_one_step", press_ctrl_c_during_step_3)
    out = tmp_path / "out"
    result = cli(*RUN, "--out", out)
    assert result.exit_code == 130, (result.output, result.exception)
    assert "finishing this step and saving a checkpoint" in result.stderr
    assert "continue with the same command and --resume" in result.stderr and " --resume" in result.stderr
    partial = tmp_path / "out.partial"
    assert not out.exists() and (partial / "checkpoints" / "step-3" / "trainer_state.json").is_file()
    assert sorted(p.name for p in (partial / "checkpoints").iterdir()) == ["step-3"]

    monkeypatch.setattr(train_module, "_one_step", original)
    again = cli(*RUN, "--out", out)  # without --resume: reported, nothing lost
    assert again.exit_code == 2 and "holds an interrupted run" in again.stderr and "--resume" in again.stderr
    resumed = cli(*RUN, "--out", out, "--resume")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert "resuming the interrupted run" in resumed.stderr and not partial.exists()
    same_run(out, uninterrupted)
    report = json.loads((out / "report.json").read_text())
    assert report["train"]["steps"] == STEPS


def test_a_killed_run_resumes_from_its_last_periodic_checkpoint(cli, tmp_path, uninterrupted, monkeypatch):
    snapshot = tmp_path / "at-kill"
    original = train_module.save_checkpoint

    def save_then_snapshot(path, *args, **kwargs):  # what `kill -9` right after step 4's checkpoint leaves
        original(path, *args, **kwargs)
        if Path(path).name == "step-4":
            shutil.copytree(Path(path).parent.parent, snapshot)

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_snapshot)
    out = tmp_path / "out"
    assert cli(*RUN, "train.save_every=2", "--out", out).exit_code == 0
    shutil.rmtree(out)
    snapshot.rename(tmp_path / "out.partial")
    monkeypatch.setattr(train_module, "save_checkpoint", original)
    # the killed run used train.save_every=2: the same command resumes from step 4
    resumed = cli(*RUN, "train.save_every=2", "--out", out, "--resume")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert "from checkpoints/step-4" in resumed.stderr
    same_run(out, uninterrupted)
    # a different recipe is refused, naming the field, and the partial run is kept
    shutil.copytree(out, tmp_path / "keep")
    (tmp_path / "out.partial").mkdir()
    shutil.copytree(out / "checkpoints", tmp_path / "out.partial" / "checkpoints")
    shutil.copy(out / ".unlearnkit.json", tmp_path / "out.partial" / ".unlearnkit.json")
    shutil.copy(out / "recipe.json", tmp_path / "out.partial" / "recipe.json")
    other = cli(*RUN, "train.save_every=2", "train.lr=1e-3", "--out", out, "--resume")
    assert other.exit_code == 2 and "train.lr=0.0005 (this command: 0.001)" in other.stderr, other.stderr
    assert (tmp_path / "out.partial" / "checkpoints" / "step-4").is_dir()
    discarded = cli(*RUN, "train.save_every=2", "--out", out, "--restart")
    assert discarded.exit_code == 0 and "(--restart)" in discarded.stderr
    assert not (tmp_path / "out.partial").exists()


def test_a_partial_folder_without_checkpoints_is_removed_with_a_note(cli, tmp_path, uninterrupted):
    partial = tmp_path / "out.partial"
    partial.mkdir()
    shutil.copy(uninterrupted / ".unlearnkit.json", partial / ".unlearnkit.json")
    (partial / "train_log.jsonl").write_text("")
    result = cli(*RUN, "--out", tmp_path / "out")
    assert result.exit_code == 0 and "saved no checkpoint to resume from" in result.stderr
    assert not partial.exists() and (tmp_path / "out" / "report.json").is_file()


def test_resume_refusals(cli, tmp_path):
    nothing = cli(*RUN, "--out", tmp_path / "none", "--resume")
    assert nothing.exit_code == 2 and "no interrupted run to resume" in nothing.stderr
    both = cli(*RUN, "--out", tmp_path / "x", "--resume", "--restart")
    assert both.exit_code == 2 and "give one of them" in both.stderr
    partial = tmp_path / "tv.partial"
    partial.mkdir()
    (partial / ".unlearnkit.json").write_text(json.dumps({"format": "unlearnkit-output", "entries": []}))
    edit = cli(*RUN, "method.name=task_vector", "--out", tmp_path / "tv", "--resume")
    assert edit.exit_code == 2 and "trains in several phases" in edit.stderr
    assert partial.is_dir()
    foreign = tmp_path / "f.partial"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    mine = cli(*RUN, "--out", tmp_path / "f")
    assert mine.exit_code == 2 and "unlearnkit did not write it" in mine.stderr
    assert (foreign / "thesis.tex").read_text() == "mine"
    bad = cli(*RUN, f"train.resume_from={tmp_path}", "--out", tmp_path / "r")
    assert bad.exit_code == 2 and "is not a checkpoint written by unlearnkit" in bad.stderr
    damaged = tmp_path / "ckpt"
    damaged.mkdir()
    (damaged / "trainer_state.safetensors").write_bytes(b"garbage")
    (damaged / "trainer_state.json").write_text("{}")
    broken = cli(*RUN, f"train.resume_from={damaged}", "--out", tmp_path / "r")
    assert broken.exit_code == 2 and "is damaged" in broken.stderr, broken.output


def test_ctrl_c_during_the_evaluation_after_training_resumes_without_training_again(cli, tmp_path, uninterrupted,
                                                                                    monkeypatch):
    import unlearnkit.pipeline.stages as pipeline

    original = pipeline._evaluate

    def interrupted_evaluation(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_evaluate", interrupted_evaluation)
    out = tmp_path / "out"
    result = cli(*RUN, "train.save_every=4", "--out", out)
    assert result.exit_code == 130 and f"last: checkpoints/step-{STEPS}" in result.stderr, result.output
    monkeypatch.setattr(pipeline, "_evaluate", original)
    trained = []
    monkeypatch.setattr(train_module, "_one_step", lambda *a: trained.append(1))
    resumed = cli(*RUN, "train.save_every=4", "--out", out, "--resume")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert trained == []  # the checkpoint of the last step: nothing left to train
    same_run(out, uninterrupted)
