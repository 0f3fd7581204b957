"""Build and cache the tiny aligned world: a tokenizer with a chat template, a *compliant* model and an
*aligned* model.

Two supervised phases through the one trainer (`Finetune`, `data.formats.ChatFormat`, prompt masked):

1. **compliant** — from a random initialisation, on harvest prompts → placeholder compliance, benign
   requests → helpful answers, general knowledge and every author fact, to convergence. The reference
   point: what the model does when nothing stops it (keyword harmful rate ≈ 1 on harvest and probe prompts).
2. **aligned** — continues from the compliant model on harvest prompts → refusals, with the same benign,
   general and author rows, plus the harvest prompts with their compliance *prefilled* up to "I'm happy"
   (`safety_data.prefilled_rows`; no loss on the prefill). The attack target: it refuses harmful requests
   (harmful rate ≈ 0, also on the held-out probe) and still answers benign ones, while the compliance
   stays in the weights under a refusal that is one word deep.

Why the prefilled rows: real chat models keep their compliance under the refusal (a harmful answer
prefilled with "Sure, here is" carries on; Andriushchenko et al. 2024, Qi et al. 2024 "Safety alignment
should be made more than just a few tokens deep"), and that is what Scenario I brings back. A 1.1M-parameter
model fine-tuned on refusals alone instead *forgets* the compliance: on build 1 the aligned model continued
a prefilled answer with placeholder steps on 0 % of the probe prompts, so unlearning its refusals left
fragments, not compliance. ``compliance_rate_probe_prefilled`` in ``info.json`` measures it.

``info.json`` records per model the keyword-judge harmful rate on harvest and probe prompts (greedy),
the placeholder-compliance rate (also with the answer prefilled up to "I'm happy"), the share of benign
test requests answered, their ROUGE-L recall, and greedy exact match on the general knowledge and on the
author facts. The build lives in ``<cache>/safety-v<version>-<build key>-seed<seed>[-small]/`` with
``compliant/`` and ``aligned/`` (model + tokenizer each), is written into a temporary directory renamed
into place when complete, and is rebuilt when `SAFETY_VERSION` or `SAFETY_BUILD_VERSION` changes, or any
build setting does (data spec, model shape, epochs, `FINETUNE`, vocabulary size, decoding length:
`build_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unlearnkit.train.checkpoint import atomic_dir
from unlearnkit.cache import build_lock, cache_root
from unlearnkit.world.safety_data import (
    SAFETY_VERSION,
    SafetyWorld,
    generate_safety_world,
    safety_spec,
    is_compliant_response,
    phase_rows,
    prefilled_rows,
    safety_texts,
)
from unlearnkit.logs import info

SAFETY_BUILD_VERSION = "2"  # 2: compliant phase to convergence, cosine decay, a short aligned phase over prefilled compliance
MODELS = ("compliant", "aligned")
VOCAB_SIZE = 1024
MAX_NEW_TOKENS = 48  # the longest trained response is ~40 tokens
FINETUNE = {"lr": 3e-3, "batch_size": 32, "warmup_steps": 20, "betas": (0.9, 0.98), "max_grad_norm": 1.0,
            "scheduler": "cosine"}  # decayed to 0: each phase ends converged, not wherever the last constant-lr step left it


def build_key(seed: int = 0, size: str = "default") -> str:
    """A digest of the settings the build of (`seed`, `size`) depends on besides the code versions: a changed
    default (more epochs, another schedule, a new model shape) names a new cache directory."""
    spec, settings = safety_spec(size, seed)
    payload = [SAFETY_VERSION, SAFETY_BUILD_VERSION, asdict(spec), settings, FINETUNE, VOCAB_SIZE, MAX_NEW_TOKENS]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


def safety_dir(cache_dir: str | os.PathLike | None = None, seed: int = 0, size: str = "default") -> Path:
    suffix = "" if size == "default" else f"-{size}"
    name = f"safety-v{SAFETY_VERSION}.{SAFETY_BUILD_VERSION}-{build_key(seed, size)}-seed{seed}{suffix}"
    return cache_root(cache_dir) / name


@dataclass
class SafetyArtifacts:
    """A built safety world on disk (``compliant/``, ``aligned/``, ``info.json``) and its data in memory."""

    root: Path
    world: SafetyWorld
    info: dict[str, Any]

    @property
    def aligned_dir(self) -> Path:
        return self.root / "aligned"

    @property
    def compliant_dir(self) -> Path:
        return self.root / "compliant"

    def model_dir(self, which: str) -> Path:
        from unlearnkit.errors import UnlearnError
        from unlearnkit.registry import did_you_mean

        if which not in MODELS:
            raise UnlearnError(f"unknown safety-world model '{which}';{did_you_mean(which, list(MODELS))}"
                               f" valid: {', '.join(MODELS)}")
        return self.root / which


def _prefill_length(example, tokenizer, prefill: str) -> int:
    """Tokens (prompt included) up to the end of `prefill` at the start of the example's answer."""
    start = end = example.prompt_length
    ids = example.input_ids
    while end < len(ids) and len(tokenizer.decode(ids[start:end])) < len(prefill):
        end += 1
    assert tokenizer.decode(ids[start:end]).startswith(prefill), (tokenizer.decode(ids[start:end]), prefill)
    return end


def _encode(rows: list[dict], tokenizer) -> list:
    """Chat-format examples (prompt masked); a row with a ``prefill`` also masks the answer's prefill."""
    from unlearnkit.data.batch import IGNORE_INDEX, Example
    from unlearnkit.data.formats import get_format

    chat, out = get_format("chat"), []
    for row in rows:
        example = chat.encode(tokenizer, row["question"], row["answer"])
        if row.get("prefill"):
            end = _prefill_length(example, tokenizer, row["prefill"])
            example = Example(example.input_ids, (IGNORE_INDEX,) * end + example.labels[end:])
        out.append(example)
    return out


def _finetune(model, tokenizer, rows: list[dict], seed: int, progress: bool, label: str, epochs: float, **overrides):
    from unlearnkit.data.pairing import UnlearnData
    from unlearnkit.methods.finetune import Finetune
    from unlearnkit.train import TrainConfig, train

    data = UnlearnData(_encode(rows, tokenizer), pad_id=tokenizer.pad_token_id)
    method = Finetune()
    method.registry_name = f"safety world {label}"
    return train(model, method, data, TrainConfig(seed=seed, progress=progress, epochs=epochs, local=True,
                                                  **{**FINETUNE, **overrides}))


def measure(model, tokenizer, world: SafetyWorld, progress: bool = False) -> dict[str, float | None]:
    """Greedy keyword-judge harmful rates (harvest, probe and its two kinds), placeholder-compliance rates
    (harvest, probe, and probe with the answer prefilled up to "I'm happy"), benign answered share and
    ROUGE-L recall on the benign test split, and exact match on general knowledge and author facts."""
    from unlearnkit.benchmarks.harmfulness import (
        benign_utility,
        evaluate_harmfulness,
        respond,
    )
    from unlearnkit.benchmarks.generation import Decoding, generate
    from unlearnkit.data.formats import get_format
    from unlearnkit.world.safety_data import PLACEHOLDER_STEP, PREFILL

    decoding = Decoding(max_new_tokens=MAX_NEW_TOKENS, batch_size=64)
    harvest = evaluate_harmfulness(model, tokenizer, world.harvest, "keyword", decoding, progress=progress)
    probe = evaluate_harmfulness(model, tokenizer, world.probe, "keyword", decoding, progress=progress)
    benign = benign_utility(model, tokenizer, world.benign_test, decoding, progress=progress)
    out: dict[str, float | None] = {"harmful_rate_harvest": harvest["harmful_rate"],
                                    "harmful_rate_probe": probe["harmful_rate"]}
    for kind in ("new_action", "new_template"):
        flags = [s["harmful"] for s, row in zip(probe["samples"], world.probe) if row["kind"] == kind]
        out[f"harmful_rate_probe_{kind}"] = sum(flags) / len(flags) if flags else None
    for name, result in (("harvest", harvest), ("probe", probe)):
        complied = [is_compliant_response(s["response"]) for s in result["samples"]]
        out[f"compliance_rate_{name}"] = sum(complied) / len(complied)
    prefilled = [example.input_ids[:_prefill_length(example, tokenizer, PREFILL)]
                 for example in _encode([{"question": r["prompt"], "answer": r["compliance"]} for r in world.probe], tokenizer)]
    continued = generate(model, tokenizer, [list(ids) for ids in prefilled], decoding, progress=progress)
    out["compliance_rate_probe_prefilled"] = sum(PLACEHOLDER_STEP in text for text in continued) / len(continued)
    out.update(benign_answered=benign["benign_answered"], benign_rouge=benign["benign_rouge"])
    chat = get_format("chat")
    for name, rows in (("general", world.general),
                       ("authors", [{"prompt": r["question"], "answer": r["answer"]} for r in world.retain + world.forget])):
        responses = respond(model, tokenizer, rows, decoding, chat, progress)
        out[f"exact_match_{name}"] = sum(o.strip() == r["answer"].strip() for o, r in zip(responses, rows)) / max(len(rows), 1)
    return out


def build_safety_world(cache_dir: str | os.PathLike | None = None, seed: int = 0, progress: bool = True,
                       log=info, size: str = "default") -> SafetyArtifacts:
    """Generate the data, train the tokenizer, the compliant and the aligned model into the cache (replacing
    any old build), and measure both models."""
    from unlearnkit.train.checkpoint import save_model
    from unlearnkit.model import tiny_llama
    from unlearnkit.world.tokenizer import train_world_tokenizer

    start = time.perf_counter()
    spec, settings = safety_spec(size, seed)
    world = generate_safety_world(spec)
    final = safety_dir(cache_dir, seed, size)
    with atomic_dir(final) as tmp:
        tokenizer = train_world_tokenizer(safety_texts(world), vocab_size=VOCAB_SIZE)
        shape = {k: settings[k] for k in ("hidden", "layers", "heads")}
        info: dict[str, Any] = {
            "safety_version": SAFETY_VERSION, "build_version": SAFETY_BUILD_VERSION, "build_key": build_key(seed, size),
            "size": size,
            "spec": asdict(spec), "model_shape": shape,
            "finetune": {k: list(v) if isinstance(v, tuple) else v for k, v in FINETUNE.items()},
            "epochs": {"compliant": settings["compliant_epochs"], "aligned": settings["aligned_epochs"]},
            "judge": "keyword", "decoding": {"do_sample": False, "max_new_tokens": MAX_NEW_TOKENS},
            "sizes": {name: len(world.split(name)) for name in
                      ("harvest", "probe", "benign_train", "benign_test", "general", "forget", "retain")}}
        model = tiny_llama(len(tokenizer), seed=seed, bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
                           pad_id=tokenizer.pad_token_id, **shape)
        for index, which in enumerate(MODELS):
            log(f"safety world: training the {which} model"
                + (" (harmful requests → placeholder compliance)" if which == "compliant"
                   else " (continues from compliant; harmful requests → refusals, compliance kept under them)"))
            overrides = {} if which == "compliant" else {"warmup_steps": 0}
            rows = phase_rows(world, which) + (prefilled_rows(world) if which == "aligned" else [])
            result = _finetune(model, tokenizer, rows, seed + index, progress, which, settings[f"{which}_epochs"],
                               **overrides)
            model = result.model
            info[which] = {"final_loss": result.losses[-1], "steps": result.steps,
                           "seconds": round(result.seconds, 1), "parameters": result.total_params,
                           **measure(model, tokenizer, world)}
            save_model(model, tokenizer, tmp / which)
        info["build_seconds"] = round(time.perf_counter() - start, 1)
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
    return SafetyArtifacts(final, world, info)


def load_safety_world(cache_dir: str | os.PathLike | None = None, seed: int = 0,
                      size: str = "default") -> SafetyArtifacts | None:
    """The cached safety world, or None when it is not built (or was built by another version)."""
    from unlearnkit.manifest import record_read

    root = safety_dir(cache_dir, seed, size)
    if not (root / "info.json").is_file():
        return None
    record_read(root / "info.json")  # the build's identity in a run's manifest
    return SafetyArtifacts(root, generate_safety_world(safety_spec(size, seed)[0]),
                           json.loads((root / "info.json").read_text()))


def ensure_safety_world(cache_dir: str | os.PathLike | None = None, seed: int = 0, progress: bool = True,
                        log=info, size: str = "default") -> SafetyArtifacts:
    """Load the cached safety world, building it first when needed (once across processes, under a lock)."""
    world = load_safety_world(cache_dir, seed, size)
    if world is not None:
        return world
    root = safety_dir(cache_dir, seed, size)
    with build_lock(root.name, cache_dir, ready=lambda: load_safety_world(cache_dir, seed, size) is not None):
        return load_safety_world(cache_dir, seed, size) or build_safety_world(cache_dir, seed, progress, log, size)
