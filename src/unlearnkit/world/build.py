"""Build and cache the tiny world: tokenizer, target model and retain model.

* the **retain model** is fine-tuned from a random initialisation on the retain authors and the
  general knowledge — never the forget authors. It is the gold standard that forget quality
  compares against;
* the **target** continues from the retain model on *everything* (forget + retain + general)
  until it reproduces the forget answers: unlearning only means something if the model
  genuinely knows the forget facts first. Continuing instead of training a second model from
  scratch halves the build time on a CPU; the retain model is still one that never saw the
  forget data, which is all forget quality needs.

Both train through the one trainer (`unlearnkit.train`). The result lives in ``<cache>/world-v<version>-seed<seed>/`` and is
rebuilt whenever the generator's `WORLD_VERSION` or this builder's `BUILD_VERSION` changes.
Building writes into a temporary directory that is renamed into place only when complete, under a file
lock, so two processes that need the same world build it once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unlearnkit.cache import build_lock, cache_lock, cache_root  # noqa: F401  (re-exported)
from unlearnkit.train.checkpoint import atomic_dir
from unlearnkit.world.generator import WORLD_VERSION, World, WorldSpec, generate_world, training_rows, world_texts
from unlearnkit.logs import info

BUILD_VERSION = "1"
MODEL_SHAPE = {"hidden": 128, "layers": 4, "heads": 4}
VOCAB_SIZE = 1024
FINETUNE = {"epochs": 35, "lr": 3e-3, "batch_size": 16, "warmup_steps": 30, "betas": (0.9, 0.98),
            "max_grad_norm": 1.0, "scheduler": "constant"}
TARGET_EXTRA_EPOCHS = 20  # the target's continuation on all data (warm start: no warmup)
SIZES = {  # world.size: the default world, and a small one for quick experiments and tests
    "default": (WorldSpec(), {}),
    "small": (WorldSpec(n_authors=6, facts_per_author=6, n_forget_authors=1, n_holdout_authors=1),
              {"hidden": 64, "layers": 2, "heads": 2, "epochs": 30, "target_epochs": 15}),
}


def world_spec(size: str = "default", seed: int = 0) -> tuple[WorldSpec, dict[str, Any]]:
    """The generator spec and build settings for `size` (default | small)."""
    from dataclasses import replace

    from unlearnkit.errors import UnlearnError

    if size not in SIZES:
        raise UnlearnError(f"unknown world.size '{size}'; valid: {', '.join(SIZES)}")
    spec, overrides = SIZES[size]
    shape = {k: overrides.get(k, v) for k, v in MODEL_SHAPE.items()}
    return replace(spec, seed=seed), {"shape": shape, "epochs": overrides.get("epochs", FINETUNE["epochs"]),
                                      "target_epochs": overrides.get("target_epochs", TARGET_EXTRA_EPOCHS)}


def world_dir(cache_dir: str | os.PathLike | None = None, seed: int = 0, size: str = "default") -> Path:
    suffix = "" if size == "default" else f"-{size}"
    return cache_root(cache_dir) / f"world-v{WORLD_VERSION}.{BUILD_VERSION}-seed{seed}{suffix}"


@dataclass
class WorldArtifacts:
    """A built world on disk and its splits in memory."""

    root: Path
    world: World
    info: dict[str, Any]

    @property
    def target_dir(self) -> Path:
        return self.root / "target"

    @property
    def retain_dir(self) -> Path:
        return self.root / "retain"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "target"  # the tokenizer is saved next to each model

    def model_dir(self, which: str) -> Path:
        from unlearnkit.errors import UnlearnError

        if which not in ("target", "retain"):
            raise UnlearnError(f"unknown world model '{which}'; valid: world:target, world:retain")
        return self.root / which


def _finetune(model, tokenizer, rows: list[dict], seed: int, progress: bool, label: str, **overrides):
    from unlearnkit.data.formats import get_format
    from unlearnkit.data.pairing import UnlearnData, encode_rows
    from unlearnkit.methods.finetune import Finetune
    from unlearnkit.train import TrainConfig, train

    fmt = get_format("openunlearning")
    data = UnlearnData(encode_rows(rows, tokenizer, fmt), pad_id=tokenizer.pad_token_id)
    cfg = TrainConfig(seed=seed, progress=progress, local=True, **{**FINETUNE, **overrides})  # one rank builds it
    method = Finetune()
    method.registry_name = f"world {label}"
    return train(model, method, data, cfg)


def exact_match(model, tokenizer, rows: list[dict], max_new_tokens: int = 48) -> float:
    """Share of questions whose greedy answer equals the reference answer exactly."""
    from unlearnkit.benchmarks.generation import generate_greedy
    from unlearnkit.data.formats import get_format

    fmt = get_format("openunlearning")
    prompts = [fmt.prompt_ids(tokenizer, r["question"]) for r in rows]
    outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=64)
    return sum(o.strip() == r["answer"].strip() for o, r in zip(outputs, rows)) / max(len(rows), 1)


def build_world(cache_dir: str | os.PathLike | None = None, seed: int = 0, progress: bool = True,
                log=info, size: str = "default") -> WorldArtifacts:
    """Generate, tokenise and train the tiny world into the cache (replacing any old build)."""
    from unlearnkit.train.checkpoint import save_model
    from unlearnkit.model import tiny_llama
    from unlearnkit.world.tokenizer import train_world_tokenizer

    start = time.perf_counter()
    spec, settings = world_spec(size, seed)
    world = generate_world(spec)
    final = world_dir(cache_dir, seed, size)
    with atomic_dir(final) as tmp:
        tokenizer = train_world_tokenizer(world_texts(world), vocab_size=VOCAB_SIZE)
        info: dict[str, Any] = {"world_version": WORLD_VERSION, "build_version": BUILD_VERSION,
                                "size": size, "spec": asdict(spec), "model_shape": settings["shape"],
                                "finetune": {k: list(v) if isinstance(v, tuple) else v for k, v in FINETUNE.items()},
                                "epochs": settings["epochs"], "target_extra_epochs": settings["target_epochs"],
                                "sizes": {k: len(getattr(world, k)) for k in
                                          ("forget", "retain", "holdout", "real_authors", "world_facts")}}
        model = tiny_llama(len(tokenizer), seed=seed, bos_id=tokenizer.bos_token_id,
                           eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, **settings["shape"])
        phases = (("retain", False, {"epochs": settings["epochs"]}),
                  ("target", True, {"epochs": settings["target_epochs"], "warmup_steps": 0}))
        for which, include_forget, overrides in phases:
            log(f"world: training the {which} model ({'with' if include_forget else 'without'} the forget authors)")
            result = _finetune(model, tokenizer, training_rows(world, include_forget), seed + include_forget,
                               progress, which, **overrides)
            model = result.model
            info[which] = {"final_loss": result.losses[-1], "steps": result.steps,
                           "seconds": round(result.seconds, 1), "parameters": result.total_params,
                           "exact_match_forget": exact_match(model, tokenizer, world.forget),
                           "exact_match_retain": exact_match(model, tokenizer, world.retain)}
            save_model(model, tokenizer, tmp / which)
        info["build_seconds"] = round(time.perf_counter() - start, 1)
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
    return WorldArtifacts(final, world, info)


def load_world(cache_dir: str | os.PathLike | None = None, seed: int = 0, size: str = "default") -> WorldArtifacts | None:
    """The cached world, or None when it is not built (or was built by another version)."""
    from unlearnkit.manifest import record_read

    root = world_dir(cache_dir, seed, size)
    if not (root / "info.json").is_file():
        return None
    record_read(root / "info.json")  # the build's identity in a run's manifest (its models are hashed apart)
    return WorldArtifacts(root, generate_world(world_spec(size, seed)[0]), json.loads((root / "info.json").read_text()))


def ensure_world(cache_dir: str | os.PathLike | None = None, seed: int = 0, progress: bool = True,
                 log=info, size: str = "default") -> WorldArtifacts:
    """Load the cached world, building it first when needed (once: another process building the same
    world is waited for, then its build is loaded)."""
    world = load_world(cache_dir, seed, size)
    if world is not None:
        return world
    root = world_dir(cache_dir, seed, size)
    with build_lock(root.name, cache_dir, ready=(root / "info.json").is_file):
        return load_world(cache_dir, seed, size) or build_world(cache_dir, seed, progress, log, size)
