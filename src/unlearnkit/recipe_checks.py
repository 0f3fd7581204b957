"""Recipe options that contradict each other, refused when the recipe is validated.

The schema (`unlearnkit.recipe`) checks each field on its own: types and ranges. `check_recipe` checks
fields against each other and against the method, so that `unlearn validate` (and `unlearn run`, before
it loads anything) refuses a recipe that would otherwise fail half-way through a run, or quietly ignore
one of its settings. Each error is one line naming the options and the fix.
"""

from __future__ import annotations

import re

from unlearnkit.errors import UnlearnError

WORLD_MUSE = "world:tiny"  # data.data_dir for muse: the tiny world in MUSE's layout (`evaluation.WORLD_MUSE`)
CHEAP_METRICS = ("forget_prob", "retain_prob")  # what eval.select.metrics=cheap measures (`selection.cheap_metrics`)


def check_recipe(recipe, method) -> None:
    """Raise `UnlearnError` for the first pair of contradicting options (`method` is the built method)."""
    from unlearnkit.data.formats import get_format

    get_format(recipe.data.format)  # an unknown data.format, with a did-you-mean
    for check in (_check_forget_source, _check_splits, _check_benchmark_options, _check_safety_paths,
                  _check_selection):
        check(recipe)
    _check_method(recipe, method)


def _check_forget_source(recipe) -> None:
    data = recipe.data
    if data.forget_source == "file" and not data.forget_file:
        raise UnlearnError("data.forget_source=file needs data.forget_file (a .jsonl of {\"text\": ...} requests)")
    if data.forget_file and data.forget_source != "file":
        raise UnlearnError(f"data.forget_file is only read with data.forget_source=file (this recipe has"
                           f" data.forget_source={data.forget_source}); set data.forget_source=file or remove"
                           " data.forget_file")
    if data.sequential and data.forget_source != "split":
        raise UnlearnError("data.sequential takes forget splits; it cannot be combined with"
                           f" data.forget_source={data.forget_source}")


def _check_splits(recipe) -> None:
    data = recipe.data
    if data.benchmark == "tofu":
        from unlearnkit.data.tofu import FORGET_SPLITS

        for name in [data.forget_split, *data.sequential]:
            if name not in FORGET_SPLITS:
                what = "data.sequential" if name != data.forget_split else "data.forget_split"
                raise UnlearnError(f"{what}: '{name}' is not a TOFU forget split; valid: {', '.join(FORGET_SPLITS)}")
        return
    if data.forget_split != "forget":
        if data.benchmark == "muse":
            raise UnlearnError(f"MUSE unlearns its raw 'forget' split (got data.forget_split='{data.forget_split}');"
                               " remove data.forget_split")
        raise UnlearnError(f"the {'safety' if data.benchmark == 'safety' else 'tiny'} world has one forget split,"
                           f" 'forget' (got '{data.forget_split}'); remove data.forget_split or set data.benchmark=tofu")
    if data.sequential and data.benchmark == "muse":
        raise UnlearnError("data.sequential is not available for MUSE yet (its sust/forget_1..4 splits are not"
                           " loaded); run one request per recipe, starting each from the previous run's model")
    for name in data.sequential:
        if not re.fullmatch(r"forget(_[1-9][0-9]*)?", name):
            raise UnlearnError(f"data.sequential: '{name}' is not a forget request of the world; valid: forget"
                               " (every forget author) or forget_1, forget_2, ... (one author each)")


def _check_benchmark_options(recipe) -> None:
    data, evaluation = recipe.data, recipe.eval
    if data.data_dir is not None and data.benchmark in ("world", "safety"):
        world = "tiny" if data.benchmark == "world" else "safety"
        raise UnlearnError(f"data.data_dir is read by data.benchmark=tofu and muse; the {world} world"
                           f" (data.benchmark={data.benchmark}) is generated: remove data.data_dir")
    world_models = data.benchmark in ("world", "safety") or (data.benchmark == "muse" and data.data_dir == WORLD_MUSE)
    if evaluation.retain_model and evaluation.retain_model.startswith("world:") and not world_models:
        raise UnlearnError(f"eval.retain_model '{evaluation.retain_model}' is a tiny-world model; it needs"
                           " data.benchmark=world (or muse with data.data_dir=world:tiny)")
    if data.benchmark == "muse" and evaluation.retain_logs:
        raise UnlearnError("eval.retain_logs holds TOFU truth ratios; MUSE has none: give eval.retain_model"
                           " (e.g. muse-bench/MUSE-News_retrain) for privleak's reference instead")
    if data.benchmark == "muse" and recipe.attacks.paraphrase:
        raise UnlearnError("attacks.paraphrase rewrites TOFU-style forget questions; MUSE has none: set"
                           " attacks.paraphrase=false (relearn and quantize work on MUSE)")


def _check_safety_paths(recipe) -> None:
    safety = recipe.safety
    for field in ("probe", "benign", "harvest"):
        source, path = getattr(safety, field), getattr(safety, f"{field}_path")
        if path is not None and source in ("world", "none"):
            raise UnlearnError(f"safety.{field}_path is read only for a prompt source such as advbench or"
                               f" truthfulqa, not safety.{field}={source}; set safety.{field} or remove"
                               f" safety.{field}_path")


def _check_selection(recipe) -> None:
    select = recipe.eval.select
    if select.rule == "first_at_or_below" and select.target is None:
        raise UnlearnError("eval.select.rule first_at_or_below needs a target (eval.select.target, e.g. the"
                           " retain model's forget_prob)")
    if select.rule == "best" and select.target is not None:
        raise UnlearnError("eval.select.target is used by eval.select.rule=first_at_or_below only; set that rule"
                           " or remove the target")
    if select.every == 0:
        return
    if recipe.data.sequential:
        raise UnlearnError("eval.select works on one unlearning request; remove data.sequential or eval.select")
    if select.metrics == "cheap":
        names = [("metric", select.metric)]
        if select.rule == "best" and select.min_retain_ratio is not None:
            names.append(("constraint_metric", select.constraint_metric))
        for field, name in names:
            if name not in CHEAP_METRICS:
                raise UnlearnError(f"eval.select.{field} '{name}' is not measured with eval.select.metrics=cheap"
                                   f" (it measures {', '.join(CHEAP_METRICS)}); set eval.select.metrics=full")


def _check_method(recipe, method) -> None:
    from unlearnkit.methods.base import ModelEdit

    name = getattr(method, "registry_name", type(method).__name__)
    if recipe.model.lora is not None and not getattr(method, "supports_lora", True):
        raise UnlearnError(f"{name} does not train LoRA adapters; remove model.lora from the recipe")
    if recipe.eval.select.every > 0 and isinstance(method, ModelEdit):
        raise UnlearnError(f"eval.select scores checkpoints during training; {name} edits weights after its"
                           " training phase, so there is nothing to select: set eval.select.every=0")
