"""Where commands write: never touch what unlearnkit did not write; interrupted runs stay in the open.

Every command that writes a directory (`unlearn run`, `eval`, `compare`, `inspect --train`) goes through
`output_dir`:

1. `check_output_dir` refuses, before any work starts, an `--out` that is a file, the current directory
   or one of its parents, a symbolic link, a folder that cannot be created, or a non-empty folder that
   unlearnkit did not write. A folder it wrote carries the marker file ``.unlearnkit.json``, which lists
   the entries it wrote; a folder that also holds anything else (a note the user dropped in) is refused,
   naming that entry. Folders written before the marker existed are recognised by their file names.
2. The command writes into the visible sibling ``DIR.partial`` (with the marker, state "partial"), holding
   a lock on DIR, so two processes never write the same output.
3. On success the marker becomes "complete" and DIR.partial replaces DIR in two renames.
4. On failure or Ctrl-C, DIR.partial is kept when it holds training checkpoints (``unlearn run ...
   --resume`` continues from the last one) and removed otherwise. The next run into DIR reports such a
   folder: it is resumed with --resume, discarded with --restart, and refused otherwise; a partial
   folder without checkpoints is removed with a note.

Files written by `unlearn craft --out` and `unlearn inspect --out` go through `write_output_file`: an
existing file is replaced only when unlearnkit wrote it and nobody changed it since (its digest is in a
ledger under the cache folder).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from unlearnkit.errors import UnlearnError
from unlearnkit.logs import info

MARKER = ".unlearnkit.json"
PARTIAL = ".partial"
# what earlier versions wrote into an output folder (before the marker): such a folder is still ours
LEGACY_ENTRIES = {"report.json", "report.md", "report.html", "model", "train_log.jsonl", "checkpoints", "stages",
                  "eval.json", "eval.md", "compare.json", "compare.md", "compare.png", "runs", "logs",
                  "inspector.json", "vocabulary.json", "weights.safetensors", "encoder", "classifier.safetensors"}
LEGACY_REPORTS = {"report.json", "eval.json", "compare.json"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unlearnkit")
    except PackageNotFoundError:
        return "unknown"


def read_marker(directory: Path) -> dict | None:
    """The marker of a folder unlearnkit wrote, or None."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == "unlearnkit-output" else None


def _write_marker(directory: Path, kind: str, state: str, command: list[str] | None) -> None:
    from unlearnkit.secrets import redact_config

    entries = sorted(p.name for p in directory.iterdir() if p.name != MARKER)
    marker = {"format": "unlearnkit-output", "version": 1, "kind": kind, "state": state, "entries": entries,
              "command": redact_config(command), "unlearnkit": _version(),
              "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    tmp = directory / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=1))
    os.replace(tmp, directory / MARKER)


def _foreign_entries(directory: Path) -> list[str] | None:
    """Entries of an existing output folder that unlearnkit did not write; None when the folder as a
    whole is not one of its outputs."""
    names = sorted(p.name for p in directory.iterdir())
    if not names:
        return []
    marker = read_marker(directory)
    if marker is not None:
        return [n for n in names if n != MARKER and n not in marker.get("entries", [])]
    if LEGACY_REPORTS & set(names):  # written by a version without the marker
        return [n for n in names if n not in LEGACY_ENTRIES]
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """The absolute output folder, or an UnlearnError naming why it may not be written (nothing is touched)."""
    given = Path(path).expanduser()
    target = Path(os.path.abspath(given))
    hint = f"choose a new folder, e.g. {flag} runs/NAME"
    if target.is_symlink():
        raise UnlearnError(f"{flag} {given} is a symbolic link; give the folder it points to, or {hint}")
    cwd = Path.cwd().resolve()
    real = target.resolve()
    if real == cwd:
        raise UnlearnError(f"{flag} {given} is the current directory; unlearnkit replaces its output folder as a"
                           f" whole, so {hint}")
    if real in cwd.parents:
        raise UnlearnError(f"{flag} {given} contains the current directory; {hint}")
    if target.exists():
        if not target.is_dir():
            raise UnlearnError(f"{flag} {given} is a file, not a folder; {hint}")
        foreign = _foreign_entries(target)
        if foreign is None:
            raise UnlearnError(f"{flag} {given} is a folder that unlearnkit did not write (it holds"
                               f" {_names(target)}); nothing was changed: {hint}")
        if foreign:
            raise UnlearnError(f"{flag} {given} holds {', '.join(repr(n) for n in foreign[:3])}, which unlearnkit did"
                               f" not write; move it out of the folder, or {hint}")
    existing = _nearest_existing(target.parent)
    if not existing.is_dir():
        raise UnlearnError(f"{flag} {given}: {existing} is a file, not a folder; {hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnlearnError(f"{flag} {given}: cannot write into {existing} (permission denied); {hint}")
    return target


def _names(directory: Path) -> str:
    names = sorted(p.name for p in directory.iterdir())
    return ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def partial_dir(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL)


def checkpoints(directory: Path) -> list[Path]:
    """Complete training checkpoints under `directory` (`checkpoints/step-N`, stages included), by step."""
    found = [p for p in directory.glob("checkpoints/step-*") if (p / "trainer_state.json").is_file()]
    found += [p for p in directory.glob("stages/*/checkpoints/step-*") if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]) if p.name.split("-", 1)[1].isdigit() else -1)


class OutputInterrupted(Exception):
    """A command stopped (Ctrl-C or a failure) after saving checkpoints; its partial folder is kept."""

    def __init__(self, message: str, partial: Path, checkpoint: Path | None):
        super().__init__(message)
        self.partial = partial
        self.checkpoint = checkpoint


def _prepare_partial(final: Path, partial: Path, kind: str, resume: bool, restart: bool, command, log) -> None:
    if partial.exists():
        if not partial.is_dir() or read_marker(partial) is None:
            raise UnlearnError(f"{partial} exists and unlearnkit did not write it; move it away or choose another --out")
        saved = checkpoints(partial)
        if resume:
            log(f"resuming the interrupted run in {partial}"
                + (f" from {saved[-1].relative_to(partial)}" if saved else " (it saved no checkpoint: from the start)"))
            _write_marker(partial, kind, "partial", command)
            return
        if saved and not restart:
            raise UnlearnError(f"{partial} holds an interrupted run (last checkpoint: {saved[-1].relative_to(partial)});"
                               " continue it with --resume, or discard it with --restart")
        log(f"removing {partial}, the partial output of an interrupted run"
            + (" (--restart)" if saved else " (it saved no checkpoint to resume from)"))
        shutil.rmtree(partial)
    elif resume:
        done = " (it is complete)" if read_marker(final) is not None else ""
        raise UnlearnError(f"--resume: there is no interrupted run to resume at {partial}{done}; run without --resume")
    try:
        partial.mkdir(parents=True)
    except OSError as err:
        raise UnlearnError(f"cannot create {partial} ({err.strerror}); choose another --out") from None
    _write_marker(partial, kind, "partial", command)


def _publish(final: Path, partial: Path, kind: str, command) -> None:
    _write_marker(partial, kind, "complete", command)
    if not final.exists():
        partial.rename(final)
        return
    foreign = _foreign_entries(final) if final.is_dir() else None
    if foreign is None or foreign:  # someone put files there while we ran: leave both as they are
        raise UnlearnError(f"{final} changed while this command ran (it now holds files unlearnkit did not write);"
                           f" nothing there was touched, and the results are in {partial}")
    old = final.with_name(f".{final.name}.replaced-{os.getpid()}")
    final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def output_dir(final: str | os.PathLike, kind: str, *, resume: bool = False, restart: bool = False,
               command: list[str] | None = None, log: Callable[[str], None] = info) -> Iterator[Path]:
    """Check `final`, lock it, and yield the partial folder to write into; publish it on success.

    Under several processes (`accelerate launch`, `torchrun`) only rank 0 owns the output folder; the other
    ranks compute alongside it and get a scratch folder that is removed afterwards."""
    from unlearnkit.cache import output_lock

    if int(os.environ.get("RANK", "0")) != 0:
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="unlearnkit-rank-"))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    target = check_output_dir(final)
    with output_lock(target):
        partial = partial_dir(target)
        existing = _nearest_existing(partial.parent)  # folders above it that this command creates go too
        _prepare_partial(target, partial, kind, resume, restart, command, log)
        try:
            yield partial
        except BaseException as err:
            saved = checkpoints(partial) if partial.is_dir() else []
            if not saved and not resume:  # a resumed run's folder is the user's to keep or discard
                shutil.rmtree(partial, ignore_errors=True)
                _remove_empty_parents(partial.parent, existing)
                raise
            if not saved:
                raise
            what = "interrupted" if isinstance(err, KeyboardInterrupt) else "stopped by an error"
            message = (f"{what}; the checkpoints are kept in {partial} (last: {saved[-1].relative_to(partial)})"
                       "; continue with the same command and --resume")
            if isinstance(err, KeyboardInterrupt):
                raise OutputInterrupted(message, partial, saved[-1]) from None
            log(message)
            raise
        _publish(target, partial, kind, command)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to (not including) `stop` while they are empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _ledger(cache_dir=None) -> Path:
    from unlearnkit.cache import cache_root

    return cache_root(cache_dir) / "written-files.json"


def _ledger_entries(ledger_path: Path) -> dict:
    try:
        ledger = json.loads(ledger_path.read_text())
    except (OSError, ValueError):
        return {}
    return ledger if isinstance(ledger, dict) else {}


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """The absolute output file, or an UnlearnError naming why it may not be written (nothing is touched).

    An existing file may be replaced only when unlearnkit wrote it and it has not changed since."""
    from unlearnkit.cache import file_digest

    given = Path(path).expanduser()
    target = Path(os.path.abspath(given))
    if target.is_dir():
        raise UnlearnError(f"{flag} {given} is a folder; give a file name, e.g. {flag} {given}/out.jsonl")
    existing = _nearest_existing(target.parent)
    if not existing.is_dir():
        raise UnlearnError(f"{flag} {given}: {existing} is a file, not a folder; choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnlearnError(f"{flag} {given}: cannot write into {existing} (permission denied); choose another {flag}")
    if target.exists() or target.is_symlink():
        if target.is_symlink() or _ledger_entries(_ledger()).get(str(target)) != file_digest(target):
            raise UnlearnError(f"{flag} {given} exists and was not written by unlearnkit (or was changed since);"
                               f" nothing was changed: choose another {flag} or remove the file")
    return target


def write_output_file(path: str | os.PathLike, text: str, flag: str = "--out") -> Path:
    """Write `text` to the file `path` atomically (checked with `check_output_file` again, under a lock)
    and remember its digest, so that the next command may replace it."""
    from unlearnkit.cache import cache_lock, file_digest

    with cache_lock("written-files"):
        target = check_output_file(path, flag)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as err:
            raise UnlearnError(f"cannot write {flag} {path} ({err.strerror}); choose another {flag}") from None
        ledger_path = _ledger()
        ledger = _ledger_entries(ledger_path)
        ledger[str(target)] = file_digest(target)
        tmp = ledger_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(ledger, indent=1))
        os.replace(tmp, ledger_path)
    return target
