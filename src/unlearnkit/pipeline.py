"""`run(recipe)`: load → evaluate before → unlearn → evaluate after → report. Nothing else.

Everything is written into a temporary sibling of the output directory and renamed into place
at the end, so a failed run leaves nothing half-written (and a previous run's output stays
intact until the new one is complete).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

from unlearnkit.errors import UnlearnError
from unlearnkit.recipe import Recipe


def _load_start_model(recipe: Recipe, bench):
    from unlearnkit.models import load_model, load_tokenizer

    name = recipe.model.name
    if name.startswith("world:"):
        if bench.world is None:
            raise UnlearnError(f"model '{name}' is the tiny world's model; it needs data.benchmark=world")
        name = str(bench.world.model_dir(name.split(":", 1)[1]))
    model = load_model(name, dtype=recipe.model.dtype, revision=recipe.model.revision,
                       trust_remote_code=recipe.model.trust_remote_code,
                       attn_implementation=recipe.model.attn_implementation)
    tokenizer = load_tokenizer(recipe.model.tokenizer or name, revision=recipe.model.revision,
                               trust_remote_code=recipe.model.trust_remote_code)
    return model, tokenizer


def build_training_data(recipe: Recipe, method, bench, tokenizer, fmt, forget_rows: list[dict] | None = None):
    """The recipe's training data for `method` (forget rows default to the benchmark's)."""
    from unlearnkit.data.texts import load_texts, text_of
    from unlearnkit.data.tofu import load_idk

    rows = bench.train_forget if forget_rows is None else forget_rows
    idk = load_idk(recipe.data.idk_file) if "idk" in method.extra_views else None
    generic = None
    if "generic" in method.extra_views:
        generic = load_texts(recipe.data.generic_file) if recipe.data.generic_file else [text_of(r) for r in bench.train_retain]
    return training_data(method, tokenizer, fmt, rows, bench.train_retain, max_length=recipe.data.max_length,
                         idk_answers=idk, generic_texts=generic, seed=recipe.seed)


def training_data(method, tokenizer, fmt, forget_rows: list[dict], retain_rows: list[dict] | None, *,
                  max_length: int | None = 512, idk_answers=None, generic_texts=None, seed: int = 0):
    """Tokenise forget rows (+ paired retain rows, + the extra views the method asks for).

    `method.forget_format` "qa" encodes rows with `fmt` (prompt masked); "text" as bare text
    (every token supervised). Views: "idk" (each question with an IDK answer from `idk_answers`),
    "generic" (generic texts, cycled, as the preferred side of dpo_generic_preferred).
    """
    from unlearnkit.data.pairing import UnlearnData, encode_rows, idk_view
    from unlearnkit.data.texts import encode_text_rows, generic_view

    def encode(rows):
        if method.forget_format == "text":
            return encode_text_rows(rows, tokenizer, max_length=max_length)
        return encode_rows(rows, tokenizer, fmt, max_length=max_length)

    if method.needs_retain() and not retain_rows:
        raise UnlearnError(f"method '{getattr(method, 'registry_name', type(method).__name__)}' uses retain data;"
                           " give retain rows (a benchmark with a retain split, or retain=... in the API)")
    extra = {}
    if "idk" in method.extra_views:
        from unlearnkit.data.tofu import load_idk

        extra["idk"] = idk_view(forget_rows, tokenizer, fmt, idk_answers or load_idk(), seed, max_length=max_length)
    if "generic" in method.extra_views:
        if not generic_texts:
            raise UnlearnError("this method prefers generic texts over the forget texts; give generic texts"
                               " (data.generic_file, or generic_texts=... in the API)")
        extra["generic"] = generic_view(len(forget_rows), generic_texts, tokenizer, max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return UnlearnData(encode(forget_rows), encode(retain_rows) if method.needs_retain() else None, extra,
                       pad_id=pad_id)


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated accelerator memory."""
    import resource
    import sys

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_rss_mb": round(rss / (1024 ** 2 if sys.platform == "darwin" else 1024), 1)}
    if torch.cuda.is_available():
        out["peak_accelerator_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def unlearn_once(model, method, data, cfg, out_dir):
    """One unlearning request: the trainer for objectives, `apply` for multi-phase model edits."""
    from unlearnkit.methods.base import ModelEdit
    from unlearnkit.train import train

    if isinstance(method, ModelEdit):
        return method.apply(model, data, cfg, out_dir=out_dir)
    return train(model, method, data, cfg, out_dir=out_dir)


def run(recipe: Recipe, out_dir: str | os.PathLike | None = None, *, progress: bool = True,
        log: Callable[[str], None] = print) -> dict:
    """Unlearn and evaluate as the recipe says; returns the report (also written to out_dir)."""
    from unlearnkit.checkpoint import atomic_dir, save_model
    from unlearnkit.data.formats import get_format
    from unlearnkit.evaluation import (evaluate_model, load_benchmark, request_rows, retain_truth_ratios,
                                       world_model_eval)
    from unlearnkit.models import LoraSpec, merge_lora, wrap_lora
    from unlearnkit.report import write_report
    from unlearnkit.train import TrainConfig
    from unlearnkit.world.build import cache_root

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    out = Path(out_dir or recipe.output_dir)
    method = recipe.build_method()
    if recipe.model.lora is not None and not getattr(method, "supports_lora", True):
        raise UnlearnError(f"{method.registry_name} does not train LoRA adapters; remove model.lora from the recipe")
    fmt = get_format(recipe.data.format, recipe.data.system_prompt)
    bench = load_benchmark(recipe.data, recipe.world, log=log, progress=progress)
    requests = [(name, request_rows(bench, name, recipe.data)) for name in recipe.data.sequential] or [(None, None)]
    lap("load_data_and_world")
    model, tokenizer = _load_start_model(recipe, bench)
    datasets = [build_training_data(recipe, method, bench, tokenizer, fmt, rows) for _, rows in requests]
    lap("load_model")

    retain_trs = retain_truth_ratios(bench, recipe, fmt, cache_root(recipe.world.cache_dir), progress)
    before = None
    if recipe.eval.before:
        log("evaluating the starting model")
        if bench.name == "world" and recipe.model.name.startswith("world:"):
            before = world_model_eval(bench, recipe.model.name.split(":", 1)[1], recipe.data.format, fmt,
                                      recipe.eval, progress, retain_trs)
        else:
            before = evaluate_model(model, tokenizer, bench, fmt, recipe.eval, retain_trs, progress)
    lap("evaluate_before")

    with atomic_dir(out) as tmp:
        cfg = TrainConfig(seed=recipe.seed, progress=progress, **recipe.train.model_dump())
        stages = []
        for index, ((name, _), data) in enumerate(zip(requests, datasets)):
            if recipe.model.lora is not None:
                model = wrap_lora(model, LoraSpec(**recipe.model.lora.model_dump()))
            stage_method = method if index == 0 else recipe.build_method()  # fresh state per request
            label = f" (request {index + 1}/{len(requests)}: {name})" if name else ""
            log(f"unlearning with {method.registry_name} on {len(data.forget)} forget examples{label}")
            stage_dir = tmp if name is None else tmp / "stages" / f"{index + 1}-{name}"
            result = unlearn_once(model, stage_method, data, cfg, stage_dir)
            model = merge_lora(result.model)
            stages.append({"request": name, "forget_examples": len(data.forget), "steps": result.steps,
                           "stopped": result.stopped, "seconds": round(result.seconds, 2),
                           "trainable_params": result.trainable_params})
            if name is not None and index < len(requests) - 1:  # the last request's result is `after`
                stages[-1]["after"] = evaluate_model(model, tokenizer, bench, fmt, recipe.eval, retain_trs,
                                                     progress)["metrics"]
        lap("unlearn")
        save_model(model, tokenizer, tmp / "model")
        lap("save_model")
        log("evaluating the unlearned model")
        after = evaluate_model(model, tokenizer, bench, fmt, recipe.eval, retain_trs, progress)
        lap("evaluate_after")
        trainable = sum(stage["trainable_params"] for stage in stages)  # every request's edit / weights
        report = {
            "method": method.registry_name,
            "method_label": getattr(method, "label", method.registry_name),  # e.g. "ERU (reconstructed)"
            "benchmark": bench.name,
            "model": recipe.model.name,
            "before": before["metrics"] if before else None,
            "after": after["metrics"],
            "train": {"steps": result.steps, "stopped": result.stopped, "seconds": round(result.seconds, 2),
                      "trainable_params": trainable, "total_params": result.total_params,
                      "trainable_fraction": trainable / max(result.total_params, 1),
                      "first_loss": result.losses[0] if result.losses else None,
                      "last_loss": result.losses[-1] if result.losses else None},
            "trainable_params": trainable,
            "trainable_fraction": trainable / max(result.total_params, 1),
            "timings": timings,
            "resources": peak_memory(),
            "recipe": recipe.resolved(),
            "environment": {"python": platform.python_version(), "platform": platform.platform()},
            "per_sample": {"before": before["per_sample"] if before else None, "after": after["per_sample"]},
            "forget_truth_ratios": after["forget_truth_ratios"],
        }
        if len(stages) > 1:
            report["stages"] = stages
        timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 2)
        write_report(report, tmp)
    report["output_dir"] = str(out)
    return report
