"""The manifest of a run: what ran, where, and on exactly which inputs (report.json's ``manifest``).

* package versions (torch, transformers, peft, accelerate, datasets, ...; unlearnkit and, for a source
  checkout, its git commit and whether the tree had uncommitted changes);
* the device (CPU or the accelerator's name, count and CUDA version) and dtypes;
* every seed the recipe sets;
* content digests of the model weights it loaded (`cache.file_digest`: SHA-256, remembered per file) and
  of every data file it read. Loaders report the files they read with `record_read`; a command collects
  them with `recording_reads`. A hub dataset is recorded by id, revision and a SHA-256 of the rows loaded
  (the content, whatever revision the hub served).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import platform
import subprocess
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors",
            "huggingface_hub", "numpy", "scipy", "scikit-learn", "rouge-score", "pydantic", "lm_eval", "unlearnkit")
WEIGHT_SUFFIXES = (".safetensors",)

_READS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("unlearnkit_reads", default=None)


def rows_digest(value: Any) -> str:
    """SHA-256 of JSON-able content (rows, settings), independent of key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def record_read(path: str | Path | None = None, *, hub: str | None = None, revision: str | None = None,
                rows: Any = None) -> None:
    """Note that the current command read a data file (or a hub dataset and the `rows` it gave); a no-op outside
    `recording_reads`."""
    reads = _READS.get()
    if reads is None:
        return
    if hub is not None:
        reads[f"hub:{hub}"] = {"revision": revision or "default", "rows": len(rows) if rows is not None else None,
                               "sha256": rows_digest(rows) if rows is not None else None}
    elif path is not None and Path(path).is_file():
        reads[str(Path(path).resolve())] = ""


@contextlib.contextmanager
def recording_reads() -> Iterator[dict[str, Any]]:
    """Collect `record_read` calls made inside the context (the dict fills as files are read)."""
    reads: dict[str, str] = {}
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def source_commit() -> dict[str, Any] | None:
    """{commit, dirty} when unlearnkit runs from a git checkout (an editable install), else None."""
    root = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def device_info(model=None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if model is not None:
        try:
            info["model_device"] = str(next(model.parameters()).device)
        except StopIteration:
            pass
    if torch.cuda.is_available():
        info.update(accelerator=torch.cuda.get_device_name(0), accelerator_count=torch.cuda.device_count(),
                    cuda=torch.version.cuda)
    return info


def model_files(name_or_path: str, revision: str | None = None) -> dict[str, Any]:
    """{source, files: {name: digest}} of a model's weights: a local folder, or the hub cache's snapshot."""
    from unlearnkit.cache import file_digest

    folder = Path(name_or_path)
    source = "local"
    if not folder.is_dir():
        source = "hub"
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(name_or_path, revision=revision, local_files_only=True,
                                            allow_patterns=["*.safetensors", "*.json"]))
        except Exception as err:  # noqa: BLE001 - the manifest records what it could not read, never fails a run
            return {"source": source, "revision": revision, "files": None, "note": f"not in the local hub cache ({type(err).__name__})"}
    shards = [p for p in sorted(folder.iterdir()) if p.name.endswith(WEIGHT_SUFFIXES)]
    with ThreadPoolExecutor(max_workers=min(8, len(shards) or 1)) as pool:  # hashlib releases the GIL
        files = dict(zip((p.name for p in shards), pool.map(file_digest, shards)))
    return {"source": source, "path": str(folder.resolve()), "revision": revision, "files": files}


def seeds(recipe) -> dict[str, Any]:
    """Every seed the recipe sets (the method's own, e.g. RMU's random direction, included)."""
    out = {"seed": recipe.seed, "world.seed": recipe.world.seed, "safety.decoding.seed": recipe.safety.decoding.seed}
    method_seed = recipe.resolved().get("method", {}).get("seed")
    if method_seed is not None:
        out["method.seed"] = method_seed
    return out


def build_manifest(recipe, models: dict[str, tuple[str, str]], reads: dict[str, Any], model=None) -> dict[str, Any]:
    """The manifest for a recipe that loaded `models` ({role: (name in the recipe, folder or hub id)}) and
    read the data files in `reads` (from `recording_reads`); `model` is the model as it ran."""
    from unlearnkit.cache import file_digest

    data = {}
    for key, value in sorted(reads.items()):
        data[key] = value if key.startswith("hub:") else file_digest(key)
    return {
        "packages": package_versions(),
        "unlearnkit_source": source_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_info(model),
        "dtype": {"weights": recipe.model.dtype, "mixed_precision": recipe.train.mixed_precision},
        "seeds": seeds(recipe),
        "models": {role: {"name": name, **model_files(source, recipe.model.revision if role == "model" else None)}
                   for role, (name, source) in models.items()},
        "data": data,
    }
