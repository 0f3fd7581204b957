"""A run as named stages over one `RunContext`:

    load → forget set → evaluate before → screen → unlearn → evaluate after → probe → save → attacks

Each stage reads and fills the context; `run_stages` runs them in order and times each one that applies.
The safety-regression guard is a `GuardDecision` that accepts by default: the screen and the probe may
reject, and the stages after a rejection that would produce or ship a model (marked ``accepted_only``) are
skipped, so no stage checks the guard itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from unlearnkit.defenses.guard import GuardDecision
from unlearnkit.errors import UnlearnError
from unlearnkit.recipe import Recipe


@dataclass
class RunContext:
    """Everything a run builds, stage by stage."""

    recipe: Any
    method: Any
    fmt: Any
    cfg: Any  # TrainConfig
    out: Path  # the partial output folder
    progress: bool
    log: Callable[[str], None]
    decision: GuardDecision = field(default_factory=GuardDecision)
    timings: dict[str, float] = field(default_factory=dict)
    bench: Any = None
    safety: Any = None
    model: Any = None
    tokenizer: Any = None
    models: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (recipe name, folder or hub id)
    requests: list = field(default_factory=list)  # [(request name or None, forget rows or None)]
    harvest: dict | None = None
    datasets: list = field(default_factory=list)
    retain_truth_ratios: list | None = None
    reference: tuple = (None, None)
    before: dict | None = None
    after: dict | None = None
    result: Any = None  # the last TrainResult
    stages: list[dict] = field(default_factory=list)
    attacks: dict = field(default_factory=dict)
    selection: dict | None = None

    def evaluate(self, model, *, start: bool = False, bench=None) -> dict:
        return _evaluate(model, self.tokenizer, bench or self.bench, self.recipe, self.fmt, self.retain_truth_ratios,
                         self.safety, self.progress, start=start, reference=self.reference)


# ------------------------------------------------------------------------------ helpers of the stages


def _load_start_model(recipe: Recipe, bench):
    from unlearnkit.model import load_model, load_tokenizer

    name = _model_source(recipe.model.name, bench)[1]
    model = load_model(name, dtype=recipe.model.dtype, revision=recipe.model.revision, device=recipe.model.device,
                       trust_remote_code=recipe.model.trust_remote_code,
                       attn_implementation=recipe.model.attn_implementation)
    tokenizer = load_tokenizer(recipe.model.tokenizer or name, revision=recipe.model.revision,
                               trust_remote_code=recipe.model.trust_remote_code)
    return model, tokenizer

def unlearn_once(model, method, data, cfg, out_dir, on_step=None):
    """One unlearning request: the trainer for objectives, `apply` for multi-phase model edits."""
    from unlearnkit.methods.base import ModelEdit
    from unlearnkit.train import train
    from unlearnkit.train.strategy import check_supported, requested

    if isinstance(method, ModelEdit):
        check_supported(requested(), method.registry_name, model_edit=True)
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

def _model_source(name: str, bench) -> tuple[str, str]:
    """(name, loadable folder or hub id) of a recipe's model (world:target -> the world's folder)."""
    if name.startswith("world:"):
        return name, str(bench.component.world_model_dir(bench, name.split(":", 1)[1]))
    return name, name


# ------------------------------------------------------------------------------------------ the stages


def load(ctx: RunContext) -> None:
    from unlearnkit.attacks.robustness import check_attacks
    from unlearnkit.benchmarks.suite import load_benchmark
    from unlearnkit.pipeline.safety_probe import SafetyProbe

    ctx.bench = load_benchmark(ctx.recipe.data, ctx.recipe.world, log=ctx.log, progress=ctx.progress)
    check_attacks(ctx.recipe, ctx.bench)
    ctx.safety = SafetyProbe(ctx.recipe, ctx.bench, ctx.fmt) if _safety_on(ctx.recipe, ctx.bench) else None


def load_model(ctx: RunContext) -> None:

    ctx.model, ctx.tokenizer = _load_start_model(ctx.recipe, ctx.bench)
    ctx.models["model"] = _model_source(ctx.recipe.model.name, ctx.bench)
    if ctx.recipe.eval.retain_model:
        ctx.models["retain_model"] = _model_source(ctx.recipe.eval.retain_model, ctx.bench)


def forget_set(ctx: RunContext) -> None:
    from unlearnkit.data.training import build_training_data

    ctx.requests, ctx.harvest = _forget_requests(ctx.recipe, ctx.bench, ctx.safety, ctx.model, ctx.tokenizer,
                                                 ctx.progress, ctx.log)
    ctx.datasets = [build_training_data(ctx.recipe, ctx.method, ctx.bench, ctx.tokenizer, ctx.fmt, rows)
                    for _, rows in ctx.requests]


def evaluate_before(ctx: RunContext) -> None:
    from unlearnkit.benchmarks.suite import privacy_reference, retain_truth_ratios

    ctx.retain_truth_ratios = retain_truth_ratios(ctx.bench, ctx.recipe, ctx.fmt, ctx.progress)
    ctx.reference = privacy_reference(ctx.bench, ctx.recipe, ctx.fmt, ctx.progress)
    if ctx.recipe.eval.before or ctx.recipe.guard.enabled:  # the guard compares with the starting model
        ctx.log("evaluating the starting model")
        ctx.before = ctx.evaluate(ctx.model, start=True)
    elif ctx.recipe.eval.after and _probe_selected(ctx):  # the linear probe is the starting model's, always
        from unlearnkit.benchmarks.white_box import fit_forget_probe

        fit_forget_probe(ctx.model, ctx.tokenizer, ctx.bench, ctx.fmt, ctx.recipe.eval)


def _probe_selected(ctx: RunContext) -> bool:
    component = ctx.bench.component
    selected = component.resolve_metrics(ctx.recipe.eval.metrics)
    return "forget_linear_probe" in (selected if selected is not None else component.metric_names(ctx.bench, ctx.recipe.eval))


def screen(ctx: RunContext) -> bool:
    """The guard's first check: the request inspector reads every forget request."""
    if not (ctx.recipe.guard.enabled and ctx.recipe.guard.screen_requests):
        return False
    from unlearnkit.data.texts import text_of
    from unlearnkit.defenses.guard import screen_requests
    from unlearnkit.defenses.inspector import load_inspector

    texts = [text_of(r) for _, rows in ctx.requests for r in (rows if rows is not None else ctx.bench.train_forget)]
    screen_requests(load_inspector(ctx.recipe.guard.inspector, log=ctx.log), texts,
                    ctx.recipe.guard.max_flagged_fraction, ctx.decision)
    return True


def unlearn(ctx: RunContext) -> None:
    from unlearnkit.model import LoraSpec, merge_lora, wrap_lora

    recipe = ctx.recipe
    for index, ((name, _), data) in enumerate(zip(ctx.requests, ctx.datasets)):
        if recipe.model.lora is not None:
            ctx.model = wrap_lora(ctx.model, LoraSpec(**recipe.model.lora.model_dump()))
        method = ctx.method if index == 0 else recipe.build_method()  # fresh state per request
        label = f" (request {index + 1}/{len(ctx.requests)}: {name})" if name else ""
        ctx.log(f"unlearning with {ctx.method.registry_name} on {len(data.forget)} forget examples{label}")
        stage_dir = ctx.out if name is None else ctx.out / "stages" / f"{index + 1}-{name}"
        selector = _selector(recipe, ctx.model, ctx.tokenizer, ctx.bench, ctx.fmt, ctx.retain_truth_ratios,
                             ctx.reference)
        result = ctx.result = unlearn_once(ctx.model, method, data, ctx.cfg, stage_dir, on_step=selector)
        if selector is not None:
            ctx.selection = selector.restore(result.steps)
            ctx.log(f"checkpoint selection: kept step {ctx.selection['selected_step']} of {result.steps}")
        ctx.model = merge_lora(result.model)
        ctx.stages.append({"request": name, "forget_examples": len(data.forget), "steps": result.steps,
                           "stopped": result.stopped, "seconds": round(result.seconds, 2),
                           "trainable_params": result.trainable_params})
        if result.stopped:
            ctx.log(f"training stopped early: {result.stopped}")
            break
        if name is not None and index < len(ctx.requests) - 1:  # the last request's result is `after`
            ctx.stages[-1]["after"] = ctx.evaluate(ctx.model)["metrics"]


def evaluate_after(ctx: RunContext) -> bool:
    if not (ctx.recipe.eval.after or ctx.recipe.guard.enabled):  # the guard compares before and after
        return False
    ctx.log("evaluating the unlearned model")
    ctx.after = ctx.evaluate(ctx.model)
    return True


def probe(ctx: RunContext) -> bool:
    """The guard's second check: did the harmful rate rise?"""
    if not ctx.recipe.guard.enabled:
        return False
    from unlearnkit.defenses.guard import check_probe

    check_probe(ctx.before["metrics"].get("harmful_rate"), ctx.after["metrics"].get("harmful_rate"),
                ctx.recipe.guard.max_harmful_increase, ctx.decision)
    return True


def save(ctx: RunContext) -> None:
    from unlearnkit.train.checkpoint import save_model

    save_model(ctx.model, ctx.tokenizer, ctx.out / "model")


def forget_measure(tokenizer, fmt, eval_cfg):
    """`measure(model, bench)` for attacks: the benchmark's forget metrics only, through the Evaluator."""
    from unlearnkit.benchmarks.suite import evaluate

    def measure(model, bench) -> dict:
        return evaluate(model, tokenizer, bench, fmt, eval_cfg, progress=False,
                        metrics=list(bench.component.forget_metrics))["metrics"]

    return measure


def attack(ctx: RunContext) -> bool:
    if ctx.after is None:  # an attack is measured against the unlearned model's metrics
        return False
    from unlearnkit.attacks.robustness import run_attacks

    ctx.attacks = run_attacks(ctx.recipe, ctx.model, ctx.tokenizer, ctx.bench, ctx.fmt,
                              forget_measure(ctx.tokenizer, ctx.fmt, ctx.recipe.eval),
                              before=ctx.before["metrics"] if ctx.before else None, after=ctx.after["metrics"],
                              progress=ctx.progress, log=ctx.log)
    return bool(ctx.attacks)


@dataclass(frozen=True)
class Stage:
    name: str  # its key in report.json's timings
    run: Callable[[RunContext], bool | None]  # False: it did not apply (not timed)
    accepted_only: bool = False  # skipped once the guard has rejected the run


STAGES = (
    Stage("load_data_and_world", load),
    Stage("load_model", load_model),
    Stage("prepare_forget_set", forget_set),
    Stage("evaluate_before", evaluate_before),
    Stage("guard_screen", screen),
    Stage("unlearn", unlearn, accepted_only=True),
    Stage("evaluate_after", evaluate_after, accepted_only=True),
    Stage("guard_probe", probe, accepted_only=True),
    Stage("save_model", save, accepted_only=True),
    Stage("attacks", attack, accepted_only=True),
)


def run_stages(ctx: RunContext) -> RunContext:
    """Every stage in order (those after a rejection skipped), each timed in `ctx.timings`."""
    for stage in STAGES:
        if stage.accepted_only and not ctx.decision.accepted:
            continue
        started = time.perf_counter()
        if stage.run(ctx) is not False:
            ctx.timings[stage.name] = round(time.perf_counter() - started, 2)
    if not ctx.decision.accepted:
        ctx.log("guard: rejected — " + "; ".join(ctx.decision.reasons) + " (no model written; serve the starting"
                " model)")
    return ctx
