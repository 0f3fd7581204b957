"""Output folders and files (`unlearnkit.pipeline.outputs`): what the user named is never lost.

A folder or file unlearnkit did not write is refused before any work starts, with one `error:` line and
nothing changed; an earlier output of ours is replaced only when complete; two processes never write
the same output; the world cache is built once under a lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from unlearnkit.errors import UnlearnError
from unlearnkit.pipeline.outputs import MARKER, check_output_dir, check_output_file, output_dir, write_output_file

pytestmark = pytest.mark.usefixtures("isolated_env")


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def one_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def user_project(tmp_path) -> Path:
    project = tmp_path / "myproject"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "notes.txt").write_text("do not lose me\n")
    return project


RUN = ("run", "world.size=small", "train.steps=2", "attacks.relearn.enabled=false", "-q")


# ----------------------------------------------------------------------------- refused before any work

def test_a_folder_of_the_users_files_is_refused_and_left_as_it_was(cli, user_project, monkeypatch):
    import unlearnkit.pipeline.runner as pipeline

    monkeypatch.setattr(pipeline, "_run_in", lambda *a, **k: pytest.fail("work started"))
    before = snapshot(user_project)
    one_error(cli(*RUN, "--out", user_project), "unlearnkit did not write", "'notes.txt'")
    assert snapshot(user_project) == before
    assert sorted(p.name for p in user_project.parent.iterdir()) == ["myproject"]  # no partial, no sibling


@pytest.mark.parametrize("command", [
    ("eval", "--model", "world:target", "-b", "world", "--world-size", "small", "-q"),
    ("compare", "default", "--methods", "npo", "world.size=small", "train.steps=1", "-q"),
    ("inspect", "--train"),
])
def test_every_command_that_writes_a_folder_refuses_a_users_folder(cli, user_project, command):
    before = snapshot(user_project)
    one_error(cli(*command, "--out", user_project), "unlearnkit did not write")
    assert snapshot(user_project) == before


@pytest.mark.parametrize("command", [("craft", "--kind", "news", "--limit", "1"), ("inspect", "REQUESTS")])
def test_commands_that_write_a_file_refuse_a_users_file(cli, tmp_path, command):
    requests = tmp_path / "requests.txt"
    requests.write_text("Please remove my address from your answers.\n")
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"my": "data"}\n')
    args = [requests if a == "REQUESTS" else a for a in command]
    one_error(cli(*args, "--out", mine), "was not written by unlearnkit")
    assert mine.read_text() == '{"my": "data"}\n'
    fresh = tmp_path / "fresh.jsonl"  # a new file is written, and written again (it is ours now)
    assert cli(*args, "--out", fresh).exit_code == 0
    assert cli(*args, "--out", fresh).exit_code == 0
    fresh.write_text(fresh.read_text() + "my edit\n")  # changed since: no longer replaced
    one_error(cli(*args, "--out", fresh), "changed since")
    assert fresh.read_text().endswith("my edit\n")


def test_check_output_dir_refusals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cases = {".": "is the current directory", "..": "contains the current directory",
             "file.txt": "is a file, not a folder", "link": "symbolic link",
             "file.txt/sub": "is a file, not a folder"}
    for given, fragment in cases.items():
        with pytest.raises(UnlearnError, match=fragment):
            check_output_dir(given)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(UnlearnError, match="permission denied"):
            check_output_dir(locked / "out")
    assert check_output_dir("new/out") == tmp_path / "new" / "out"
    (tmp_path / "empty").mkdir()
    assert check_output_dir("empty") == tmp_path / "empty"  # an empty folder may be used
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_an_output_of_an_earlier_version_is_recognised_by_its_files(tmp_path):
    legacy = tmp_path / "legacy"
    (legacy / "model").mkdir(parents=True)
    (legacy / "report.json").write_text("{}")
    (legacy / "train_log.jsonl").write_text("")
    assert check_output_dir(legacy) == legacy
    (legacy / "thesis.tex").write_text("mine")
    with pytest.raises(UnlearnError, match="'thesis.tex', which unlearnkit did not write"):
        check_output_dir(legacy)


# ------------------------------------------------------------------------ replacing our own output

def test_output_dir_replaces_only_its_own_output_and_refuses_a_file_dropped_into_it(tmp_path):
    out = tmp_path / "runs" / "a"
    with output_dir(out, "run", log=lambda m: None) as tmp:
        assert tmp == tmp_path / "runs" / "a.partial" and (tmp / MARKER).is_file()
        (tmp / "report.json").write_text('{"n": 1}')
    marker = json.loads((out / MARKER).read_text())
    assert marker["state"] == "complete" and marker["entries"] == ["report.json"]
    with output_dir(out, "run", log=lambda m: None) as tmp:
        (tmp / "report.json").write_text('{"n": 2}')
    assert json.loads((out / "report.json").read_text()) == {"n": 2}
    assert sorted(p.name for p in out.parent.iterdir()) == ["a"]  # no partial, no old copy left
    (out / "notes.md").write_text("my notes")
    with pytest.raises(UnlearnError, match="'notes.md', which unlearnkit did not write"):
        with output_dir(out, "run", log=lambda m: None):
            pytest.fail("work started")
    assert (out / "notes.md").read_text() == "my notes"


def test_a_failure_removes_the_partial_folder_and_the_folders_it_created(tmp_path):
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(RuntimeError):
        with output_dir(out, "run", log=lambda m: None):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_two_processes_never_write_the_same_output(tmp_path, cli):
    from unlearnkit.cache import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # another process is writing `out`
        one_error(cli(*RUN, "--out", out), "another unlearn process is writing")
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_write_output_file_rejects_folders_and_files_in_the_way(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(UnlearnError, match="is a folder"):
        check_output_file(tmp_path / "dir")
    with pytest.raises(UnlearnError, match="is a file, not a folder"):
        check_output_file(tmp_path / "plain" / "x.jsonl")
    path = write_output_file(tmp_path / "new" / "x.jsonl", "a\n")
    assert path.read_text() == "a\n" and oct(path.stat().st_mode & 0o777) == "0o644"


# ------------------------------------------------------------------------------ the world cache lock

def test_two_processes_needing_the_same_world_build_it_once(tmp_path, monkeypatch):
    import unlearnkit.world.build as build

    builds = []

    def slow_build(cache_dir, seed, progress, log, size):  # stands in for the training: slow, and counted
        builds.append(threading.current_thread().name)
        threading.Event().wait(0.5)
        root = build.world_dir(cache_dir, seed, size)
        root.mkdir(parents=True)
        (root / "info.json").write_text("{}")
        return build.load_world(cache_dir, seed, size)

    monkeypatch.setattr(build, "build_world", slow_build)
    results = []

    def worker():
        results.append(build.ensure_world(tmp_path, size="small", progress=False, log=lambda m: None).root)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(builds) == 1 and len(results) == 2 and results[0] == results[1]
