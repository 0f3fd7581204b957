"""The on-disk cache: where it is, locks on what is built into it, and content digests of files.

* `cache_root()`: ``$UNLEARNKIT_CACHE``, else ``~/.cache/unlearnkit``. The tiny worlds, cached
  evaluations and the built-in request inspector live there.
* `cache_lock(name)`: an inter-process file lock (``filelock``) under ``<cache>/locks/``. Two processes
  that need the same world build it once: the second waits, then loads what the first built.
  `output_lock` is the same for an output directory, taken without waiting. `build_lock` is `cache_lock` for
  building a world: under a multi-process launch only rank 0 builds it (transformers writes model files from
  rank 0 only once a process group exists), and the other ranks wait until it is there.
* `file_digest(path)`: the SHA-256 of a file's content. A 1B model's weights take a few seconds to
  hash, a 70B model's minutes, so digests are remembered under ``<cache>/digests/`` by (real path, size,
  modification time): a file that changes gets a new digest, one that does not is hashed once. Files
  in the Hugging Face hub cache are blobs named by their own SHA-256, which is used without reading them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from unlearnkit.errors import UnlearnError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $UNLEARNKIT_CACHE, else ~/.cache/unlearnkit."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("UNLEARNKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unlearnkit"


def _lock_file(key: str, cache_dir: str | os.PathLike | None) -> Path:
    locks = cache_root(cache_dir) / "locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UnlearnError(f"cannot create the cache folder {locks} ({err.strerror}); set UNLEARNKIT_CACHE to a"
                           " writable folder") from None
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)[-60:]
    return locks / f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.lock"


@contextlib.contextmanager
def cache_lock(key: str, cache_dir: str | os.PathLike | None = None) -> Iterator[None]:
    """Hold the lock named `key` (waiting for another process that holds it) for the duration."""
    with FileLock(str(_lock_file(key, cache_dir))):
        yield


@contextlib.contextmanager
def build_lock(key: str, cache_dir: str | os.PathLike | None = None, *, ready: Callable[[], bool],
               poll_s: float = 2.0) -> Iterator[None]:
    """`cache_lock(key)` for building something into the cache. Under `accelerate launch` / `torchrun`, a rank
    other than 0 first waits until `ready()` (rank 0's build is in place): `save_pretrained` writes nothing on
    other ranks once a process group exists. If rank 0 fails, the launcher stops every rank."""
    if int(os.environ.get("RANK", "0")) != 0:
        while not ready():
            time.sleep(poll_s)
    with cache_lock(key, cache_dir):
        yield


@contextlib.contextmanager
def output_lock(directory: Path) -> Iterator[None]:
    """Hold the lock of an output directory, or fail at once when another process writes to it."""
    lock = FileLock(str(_lock_file(f"output:{directory}", None)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UnlearnError(f"another unlearn process is writing {directory}; wait for it to finish or choose"
                           " another --out") from None
    try:
        yield
    finally:
        lock.release()


def _hub_blob_digest(path: Path) -> str | None:
    """The SHA-256 in a hub-cache blob's name (weights are stored under blobs/<sha256>), else None."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    return target.name if target.parent.name == "blobs" and _HEX64.match(target.name) else None


def file_digest(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """'sha256:<hex>' of the file's content (remembered by real path, size and mtime)."""
    path = Path(path)
    blob = _hub_blob_digest(path)
    if blob is not None:
        return f"sha256:{blob}"
    real = Path(os.path.realpath(path))
    stat = real.stat()
    key = hashlib.sha256(f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    memo = cache_root(cache_dir) / "digests" / f"{key}.json"
    try:
        return json.loads(memo.read_text())["digest"]
    except (OSError, ValueError, KeyError):
        pass
    sha = hashlib.sha256()
    with open(real, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            sha.update(chunk)
    digest = f"sha256:{sha.hexdigest()}"
    with contextlib.suppress(OSError):  # a read-only cache only costs the next run the hashing
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(real), "size": stat.st_size, "digest": digest}))
        os.replace(tmp, memo)
    return digest
