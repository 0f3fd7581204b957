"""`run(recipe)`: load → forget set → evaluate before → [guard: screen] → unlearn → evaluate after →
[guard: probe] → attacks (relearn, quantize, paraphrase; `attacks.robustness`) → report. Nothing else.

The forget set is the benchmark's forget split, a file of requests, or the model's own refusals to
harmful prompts (Scenario I, harvested by `safety_probe`); `data.sequential` unlearns several requests
one after the other. Harmfulness is measured next to the benchmark's metrics when the recipe asks for it.

Everything is written into a temporary sibling of the output directory and renamed into place
at the end, so a failed run leaves nothing half-written (and a previous run's output stays
intact until the new one is complete).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Callable

from unlearnkit.errors import UnlearnError
from unlearnkit.model.loading import resolve_device
from unlearnkit.recipe import Recipe
from unlearnkit.pipeline.resume import check_resumable, train_settings
from unlearnkit.pipeline.stages import _evaluate, _load_start_model, _model_source, _safety_on
from unlearnkit.logs import info


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


def run(recipe: Recipe, out_dir: str | os.PathLike | None = None, *, progress: bool = True,
        log: Callable[[str], None] = info, resume: bool = False, restart: bool = False,
        command: list[str] | None = None) -> dict:
    """Unlearn and evaluate as the recipe says; returns the report (also written to out_dir).

    The output folder is checked before anything else runs (`unlearnkit.pipeline.outputs`): the run writes into
    DIR.partial and replaces DIR only when complete. `resume` continues an interrupted run from its last
    checkpoint; `restart` discards one. With `guard.enabled`, a rejected run (flagged requests, or a
    harmful-rate rise) writes its report and no model: report["guard"] says why. A run whose training
    the divergence guard stopped says so in report["train"]["stopped"].
    """
    from unlearnkit.data.formats import get_format
    from unlearnkit.manifest import recording_reads
    from unlearnkit.pipeline.outputs import check_output_dir, output_dir, partial_dir

    from unlearnkit.train.strategy import join_processes, requested

    requested()  # a strategy we refuse (DeepSpeed, FSDP1) is refused before anything runs
    join_processes()  # under accelerate launch: every rank joins before any rank works alone (world builds)
    out = Path(out_dir or recipe.output_dir)
    method = recipe.build_method()
    if recipe.model.lora is not None and not getattr(method, "supports_lora", True):
        raise UnlearnError(f"{method.registry_name} does not train LoRA adapters; remove model.lora from the recipe")
    fmt = get_format(recipe.data.format, recipe.data.system_prompt)
    resolve_device(recipe.model.device)  # a GPU that is not there is refused before anything runs
    from unlearnkit.registry import BENCHMARKS

    if not BENCHMARKS.get(recipe.data.benchmark).unlearnable:
        raise UnlearnError(f"{recipe.data.benchmark} is an evaluation benchmark (no forget set to unlearn); evaluate"
                           f" with `unlearn eval -b {recipe.data.benchmark}` and unlearn with another data.benchmark")
    if resume:
        check_resumable(recipe, method)
    with output_dir(out, "run", resume=resume, restart=restart, command=command, log=log) as tmp:
        shared = None if int(os.environ.get("RANK", "0")) == 0 else partial_dir(check_output_dir(out))
        cfg = train_settings(recipe, tmp, resume, checkpoints_in=shared)
        cfg.progress = progress  # --quiet hides the training bar too
        with recording_reads() as reads:
            report = _run_in(tmp, recipe, method, fmt, cfg, progress, log)
        from unlearnkit.manifest import build_manifest
        from unlearnkit.report import write_report

        report["manifest"] = build_manifest(recipe, report.pop("_models"), reads, report.pop("_model"))
        write_report(report, tmp)
    report["output_dir"] = str(out)
    return report


def _run_in(tmp: Path, recipe: Recipe, method, fmt, cfg, progress: bool, log) -> dict:
    """The run's stages (`pipeline.stages`), writing into the partial folder `tmp`; returns the report (not yet
    written)."""
    from unlearnkit.pipeline.stages import RunContext, run_stages

    ctx = run_stages(RunContext(recipe, method, fmt, cfg, tmp, progress, log))
    tracking = getattr(ctx.result, "tracking", None)
    if tracking is not None:  # train.report_to: the evaluation next to the training curves
        if ctx.before:
            tracking.log_metrics(ctx.before["metrics"], step=0, prefix="eval_before/")
        if ctx.after:
            tracking.log_metrics(ctx.after["metrics"], step=ctx.result.steps, prefix="eval/")
        tracking.finish()
    report = {**_report(ctx), **ctx.attacks}
    if ctx.selection is not None:
        report["selection"] = ctx.selection
    return {**report, "_models": ctx.models, "_model": ctx.model}


def _report(ctx) -> dict:
    recipe, method, bench, before, after, result = ctx.recipe, ctx.method, ctx.bench, ctx.before, ctx.after, ctx.result
    stages, timings, harvest, safety = ctx.stages, ctx.timings, ctx.harvest, ctx.safety
    decision = ctx.decision if recipe.guard.enabled else None
    trainable = sum(stage["trainable_params"] for stage in stages)  # every request's edit / weights
    total = result.total_params if result is not None else None
    report = {
        "method": method.registry_name,
        "method_label": getattr(method, "label", method.registry_name),  # e.g. "ERU (reconstructed)"
        "benchmark": bench.name,
        "model": recipe.model.name,
        "before": before["metrics"] if before else None,
        "after": after["metrics"] if after else None,
        "train": None if result is None else {
            "steps": result.steps, "stopped": result.stopped, "seconds": round(result.seconds, 2),
            "trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / max(total, 1),
            "first_loss": result.losses[0] if result.losses else None,
            "last_loss": result.losses[-1] if result.losses else None},
        "trainable_params": trainable,
        "trainable_fraction": trainable / max(total, 1) if total else 0.0,
        "timings": timings,
        "resources": peak_memory(),
        "recipe": recipe.resolved(),
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
        "per_sample": {"before": before["per_sample"] if before else None,
                       "after": after["per_sample"] if after else None},
        "forget_truth_ratios": after.get("forget_truth_ratios") if after else None,
        "privleak_reference": (after or before or {}).get("privleak_reference"),
    }
    if len(stages) > 1:
        report["stages"] = stages
    if safety is not None:
        report["safety"] = {**safety.describe(),
                            "samples": {"before": (before or {}).get("safety_samples"),
                                        "after": (after or {}).get("safety_samples")}}
    if harvest is not None:
        report["attack"] = {"name": "refusal_unlearning", "scenario": "I", **harvest}
    if decision is not None:
        report["guard"] = decision.to_dict()
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 2)
    return report


def evaluate_recipe(recipe: Recipe, out_dir: str | os.PathLike | None = None, *, progress: bool = True,
                    log: Callable[[str], None] = info, command: list[str] | None = None) -> dict:
    """Evaluate the recipe's model without unlearning: its benchmark's metrics and, when the recipe
    measures harmfulness, harmful rate and benign utility. Writes eval.json and eval.md (with a manifest)."""
    from unlearnkit.data.formats import get_format
    from unlearnkit.benchmarks.suite import load_benchmark, privacy_reference, retain_truth_ratios
    from unlearnkit.manifest import build_manifest, recording_reads
    from unlearnkit.pipeline.outputs import output_dir
    from unlearnkit.report import write_eval
    from unlearnkit.pipeline.safety_probe import SafetyProbe
    from unlearnkit.train.strategy import join_processes

    join_processes()  # every rank joins before any rank works alone (world builds)

    fmt = get_format(recipe.data.format, recipe.data.system_prompt)
    resolve_device(recipe.model.device)
    out = Path(out_dir or recipe.output_dir)
    with output_dir(out, "eval", command=command, log=log) as tmp, recording_reads() as reads:
        bench = load_benchmark(recipe.data, recipe.world, log=log, progress=progress)
        safety = SafetyProbe(recipe, bench, fmt) if _safety_on(recipe, bench) else None
        model, tokenizer = _load_start_model(recipe, bench)
        retain_trs = retain_truth_ratios(bench, recipe, fmt, progress)
        reference = privacy_reference(bench, recipe, fmt, progress)  # privleak's retain AUC, as in `unlearn run`
        result = _evaluate(model, tokenizer, bench, recipe, fmt, retain_trs, safety, progress, start=False,
                           reference=reference)
        result.update(model=recipe.model.name, benchmark=bench.name, recipe=recipe.resolved())
        if safety is not None:
            result["safety"] = safety.describe()
        models = {"model": _model_source(recipe.model.name, bench)}
        if recipe.eval.retain_model:
            models["retain_model"] = _model_source(recipe.eval.retain_model, bench)
        result["manifest"] = build_manifest(recipe, models, reads, model)
        write_eval(result, tmp, f"{recipe.model.name} on {bench.name}")
    result["output_dir"] = str(out)
    return result
