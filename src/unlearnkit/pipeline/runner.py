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
import time
from pathlib import Path
from typing import Callable

from unlearnkit.data.training import build_training_data
from unlearnkit.errors import UnlearnError
from unlearnkit.model.loading import resolve_device
from unlearnkit.recipe import Recipe
from unlearnkit.pipeline.resume import check_resumable, train_settings


def _load_start_model(recipe: Recipe, bench):
    from unlearnkit.model import load_model, load_tokenizer

    name = _model_source(recipe.model.name, bench)[1]
    model = load_model(name, dtype=recipe.model.dtype, revision=recipe.model.revision, device=recipe.model.device,
                       trust_remote_code=recipe.model.trust_remote_code,
                       attn_implementation=recipe.model.attn_implementation)
    tokenizer = load_tokenizer(recipe.model.tokenizer or name, revision=recipe.model.revision,
                               trust_remote_code=recipe.model.trust_remote_code)
    return model, tokenizer


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


def unlearn_once(model, method, data, cfg, out_dir, on_step=None):
    """One unlearning request: the trainer for objectives, `apply` for multi-phase model edits."""
    from unlearnkit.methods.base import ModelEdit
    from unlearnkit.train import train

    if isinstance(method, ModelEdit):
        if on_step is not None:
            raise UnlearnError(f"eval.select scores checkpoints during training; {method.registry_name} edits weights"
                               " after its training phase, so there is nothing to select: set eval.select.every=0")
        return method.apply(model, data, cfg, out_dir=out_dir)
    return train(model, method, data, cfg, out_dir=out_dir, on_step=on_step)


def _selector(recipe: Recipe, model, tokenizer, bench, fmt, retain_trs, reference):
    """The checkpoint selector for `eval.select` (None when off)."""
    from unlearnkit.benchmarks.suite import evaluate
    from unlearnkit.pipeline.selection import CheckpointSelector, cheap_metrics

    sel = recipe.eval.select
    if sel.every <= 0:
        return None
    if recipe.data.sequential:
        raise UnlearnError("eval.select works on one unlearning request; remove data.sequential or eval.select")
    if sel.metrics == "cheap":
        forget, retain = bench.component.selection_rows(bench)  # MUSE: its knowmem QA rows

        def score(m):
            return cheap_metrics(m, tokenizer, forget, retain, fmt, recipe.eval.batch_size)
    else:
        def score(m):
            return evaluate(m, tokenizer, bench, fmt, recipe.eval, retain_truth_ratios=retain_trs, reference=reference,
                            progress=False)["metrics"]
    return CheckpointSelector(model, score, sel.every, sel.rule, sel.metric, sel.mode, sel.min_retain_ratio,
                              sel.target, sel.constraint_metric, start=score(model))


def _safety_on(recipe: Recipe, bench) -> bool:
    if recipe.safety.evaluate is not None:
        return recipe.safety.evaluate
    return bench.component.measures_harm or recipe.guard.enabled or recipe.data.forget_source == "refusals"


def _forget_requests(recipe: Recipe, bench, safety, model, tokenizer, progress, log):
    """[(request name or None, rows or None for the benchmark's forget rows)], and harvest statistics."""
    from unlearnkit.data.texts import load_rows

    source = recipe.data.forget_source
    if recipe.data.sequential:
        if source != "split":
            raise UnlearnError("data.sequential takes forget splits; it cannot be combined with"
                               f" data.forget_source={source}")
        return [(name, bench.component.request_rows(bench, name, recipe.data)) for name in recipe.data.sequential], None
    if source == "file":
        if not recipe.data.forget_file:
            raise UnlearnError("data.forget_source=file needs data.forget_file (a .jsonl of {\"text\": ...} requests)")
        return [(None, load_rows(recipe.data.forget_file))], None
    if source == "refusals":
        log("harvesting the model's refusals to harmful prompts (Scenario I)")
        rows, stats = safety.harvest(model, tokenizer, progress)
        log(f"kept {stats['refusals_kept']} of {stats['harvest_prompts']} responses as the forget set")
        return [(None, rows)], stats
    return [(None, None)], None


def _evaluate(model, tokenizer, bench, recipe, fmt, retain_trs, safety, progress, start: bool, reference=None) -> dict:
    """TOFU-style metrics (cached for the tiny world's own models), the privacy suite when the benchmark
    has a holdout (`reference`: the retain model and its Min-K% AUC), plus harmfulness when measured."""
    from unlearnkit.benchmarks.suite import evaluate, world_model_eval

    if start and recipe.model.name.startswith("world:"):  # a bundled world's own model: cached by content
        result = world_model_eval(bench, recipe.model.name.split(":", 1)[1], recipe, fmt, progress, retain_trs, reference)
    else:
        result = evaluate(model, tokenizer, bench, fmt, recipe.eval, retain_truth_ratios=retain_trs, reference=reference,
                          progress=progress)
    result = {**result, "metrics": dict(result["metrics"])}
    if safety is not None:
        metrics, samples = safety.measure(model, tokenizer, progress)
        result["metrics"].update(metrics)
        result["safety_samples"] = samples
    return result


def run(recipe: Recipe, out_dir: str | os.PathLike | None = None, *, progress: bool = True,
        log: Callable[[str], None] = print, resume: bool = False, restart: bool = False,
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
    from unlearnkit.pipeline.outputs import output_dir

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
        cfg = train_settings(recipe, tmp, resume)
        with recording_reads() as reads:
            report = _run_in(tmp, recipe, method, fmt, cfg, progress, log)
        from unlearnkit.manifest import build_manifest
        from unlearnkit.report import write_report

        report["manifest"] = build_manifest(recipe, report.pop("_models"), reads, report.pop("_model"))
        write_report(report, tmp)
    report["output_dir"] = str(out)
    return report


def _run_in(tmp: Path, recipe: Recipe, method, fmt, cfg, progress: bool, log) -> dict:
    """The run's stages, writing into the partial folder `tmp`; returns the report (not yet written)."""
    from unlearnkit.attacks.robustness import check_attacks, run_attacks
    from unlearnkit.train.checkpoint import save_model
    from unlearnkit.data.texts import text_of
    from unlearnkit.defenses.guard import GuardDecision, check_probe, screen_requests
    from unlearnkit.benchmarks.suite import load_benchmark, privacy_reference, retain_truth_ratios
    from unlearnkit.model import LoraSpec, merge_lora, wrap_lora
    from unlearnkit.pipeline.safety_probe import SafetyProbe

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    bench = load_benchmark(recipe.data, recipe.world, log=log, progress=progress)
    check_attacks(recipe, bench)
    safety = SafetyProbe(recipe, bench, fmt) if _safety_on(recipe, bench) else None
    lap("load_data_and_world")
    model, tokenizer = _load_start_model(recipe, bench)
    models = {"model": _model_source(recipe.model.name, bench)}
    if recipe.eval.retain_model:
        models["retain_model"] = _model_source(recipe.eval.retain_model, bench)
    lap("load_model")
    requests, harvest = _forget_requests(recipe, bench, safety, model, tokenizer, progress, log)
    datasets = [build_training_data(recipe, method, bench, tokenizer, fmt, rows) for _, rows in requests]
    lap("prepare_forget_set")

    retain_trs = retain_truth_ratios(bench, recipe, fmt, progress)
    reference = privacy_reference(bench, recipe, fmt, progress)

    def evaluate(m, start: bool = False, b=bench) -> dict:
        return _evaluate(m, tokenizer, b, recipe, fmt, retain_trs, safety, progress, start=start, reference=reference)

    before = None
    if recipe.eval.before or recipe.guard.enabled:  # the guard compares with the starting model
        log("evaluating the starting model")
        before = evaluate(model, start=True)
    lap("evaluate_before")

    decision = GuardDecision()  # accepts unless the guard is on and rejects
    if recipe.guard.enabled and recipe.guard.screen_requests:
        from unlearnkit.defenses.inspector import load_inspector

        texts = [text_of(r) for _, rows in requests for r in (rows if rows is not None else bench.train_forget)]
        screen_requests(load_inspector(recipe.guard.inspector, log=log), texts, recipe.guard.max_flagged_fraction,
                        decision)
        lap("guard_screen")

    stages, result, after, attacks, selection = [], None, None, {}, None
    if decision.accepted:
        for index, ((name, _), data) in enumerate(zip(requests, datasets)):
            if recipe.model.lora is not None:
                model = wrap_lora(model, LoraSpec(**recipe.model.lora.model_dump()))
            stage_method = method if index == 0 else recipe.build_method()  # fresh state per request
            label = f" (request {index + 1}/{len(requests)}: {name})" if name else ""
            log(f"unlearning with {method.registry_name} on {len(data.forget)} forget examples{label}")
            stage_dir = tmp if name is None else tmp / "stages" / f"{index + 1}-{name}"
            selector = _selector(recipe, model, tokenizer, bench, fmt, retain_trs, reference)
            result = unlearn_once(model, stage_method, data, cfg, stage_dir, on_step=selector)
            if selector is not None:
                selection = selector.restore(result.steps)
                log(f"checkpoint selection: kept step {selection['selected_step']} of {result.steps}")
            model = merge_lora(result.model)
            stages.append({"request": name, "forget_examples": len(data.forget), "steps": result.steps,
                           "stopped": result.stopped, "seconds": round(result.seconds, 2),
                           "trainable_params": result.trainable_params})
            if result.stopped:
                log(f"training stopped early: {result.stopped}")
                break
            if name is not None and index < len(requests) - 1:  # the last request's result is `after`
                stages[-1]["after"] = evaluate(model)["metrics"]
        lap("unlearn")
        if recipe.eval.after or recipe.guard.enabled:  # the guard compares the starting and unlearned models
            log("evaluating the unlearned model")
            after = evaluate(model)
            lap("evaluate_after")
        if recipe.guard.enabled:
            check_probe(before["metrics"].get("harmful_rate"), after["metrics"].get("harmful_rate"),
                        recipe.guard.max_harmful_increase, decision)
        if decision.accepted:
            save_model(model, tokenizer, tmp / "model")
            lap("save_model")
            if after is not None:  # an attack is measured against the unlearned model's metrics
                attacks = run_attacks(recipe, model, tokenizer, bench, fmt, lambda m, b: evaluate(m, b=b),
                                      before=before["metrics"] if before else None, after=after["metrics"],
                                      progress=progress, log=log)
                if attacks:
                    lap("attacks")
    if not decision.accepted:
        log("guard: rejected — " + "; ".join(decision.reasons) + " (no model written; serve the starting model)")
    report = {**_report(recipe, method, bench, before, after, result, stages, timings,
                        decision if recipe.guard.enabled else None, harvest, safety), **attacks}
    if selection is not None:
        report["selection"] = selection
    return {**report, "_models": models, "_model": model}


def _model_source(name: str, bench) -> tuple[str, str]:
    """(name, loadable folder or hub id) of a recipe's model (world:target -> the world's folder)."""
    if name.startswith("world:"):
        return name, str(bench.component.world_model_dir(bench, name.split(":", 1)[1]))
    return name, name


def _report(recipe, method, bench, before, after, result, stages, timings, decision, harvest, safety) -> dict:
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
                    log: Callable[[str], None] = print, command: list[str] | None = None) -> dict:
    """Evaluate the recipe's model without unlearning: its benchmark's metrics and, when the recipe
    measures harmfulness, harmful rate and benign utility. Writes eval.json and eval.md (with a manifest)."""
    from unlearnkit.data.formats import get_format
    from unlearnkit.benchmarks.suite import load_benchmark, privacy_reference, retain_truth_ratios
    from unlearnkit.manifest import build_manifest, recording_reads
    from unlearnkit.pipeline.outputs import output_dir
    from unlearnkit.report import write_eval
    from unlearnkit.pipeline.safety_probe import SafetyProbe

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
