"""Recipe options that contradict each other, refused when the recipe is validated.

The schema (`unlearnkit.recipe`) checks each field on its own: types and ranges. `check_recipe` checks
fields against each other and against the method, so that `unlearn validate` (and `unlearn run`, before
it loads anything) refuses a recipe that would otherwise fail half-way through a run, or quietly ignore
one of its settings. Each error is one line naming the options and the fix; `friendly_error` turns a
schema (pydantic) error into such a line too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from unlearnkit.errors import UnlearnError
from unlearnkit.registry import did_you_mean, field_problem, show_value

CHEAP_METRICS = ("forget_prob", "retain_prob")  # what eval.select.metrics=cheap measures (`selection.cheap_metrics`)


def check_recipe(recipe, method) -> None:
    """Raise `UnlearnError` for the first pair of contradicting options (`method` is the built method)."""
    from unlearnkit.data.formats import get_format

    get_format(recipe.data.format)  # an unknown data.format, with a did-you-mean
    for check in (_check_forget_source, _check_benchmark, _check_safety_paths, _check_selection):
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


def _check_benchmark(recipe) -> None:
    """The benchmark is registered (did-you-mean otherwise) and accepts the recipe's options."""
    from unlearnkit.registry import BENCHMARKS

    benchmark = BENCHMARKS.build(recipe.data.benchmark)
    benchmark.check(recipe)
    retain = recipe.eval.retain_model
    if retain and retain.startswith("world:") and not benchmark.has_world_models(recipe.data):
        raise UnlearnError(f"eval.retain_model '{retain}' is a tiny-world model; it needs data.benchmark=world"
                           " (or muse with data.data_dir=world:tiny)")


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


# ------------------------------------------------------------ a pydantic error as one line with the fix


def _section_model(field: Any):
    """The section class a field holds (LoraSection for `lora: LoraSection | None`), or None."""
    annotation = getattr(field, "annotation", None)
    return next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                 and issubclass(a, BaseModel)), None)


def friendly_error(err, source: str) -> UnlearnError:
    """The first validation error as one line: the field, what is wrong, what it got, and an example."""
    first = err.errors()[0]
    loc = [str(p) if not isinstance(p, int) else p for p in first["loc"]]
    if first["type"] == "extra_forbidden":
        where = ".".join(str(p) for p in loc)
        from unlearnkit.recipe import Recipe

        section_model: Any = Recipe
        for part in loc[:-1]:
            section_model = _section_model(section_model.model_fields.get(part))
            if section_model is None:
                break
        valid = list(section_model.model_fields) if section_model is not None else []
        return UnlearnError(f"{source}: unknown field '{where}';{did_you_mean(str(loc[-1]), valid)}"
                            f" valid fields here: {', '.join(valid)}")
    # walk the schema along loc: sections, then the field; list indices are kept, union branch tags dropped
    from unlearnkit.recipe import Recipe

    model: Any = Recipe
    names: list[str] = []
    field = None
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif model is not None and part in model.model_fields:
            field = model.model_fields[part]
            names.append(part)
            where += ("." if where else "") + part
            model = _section_model(field)
    if model is not None and first["type"] in ("value_error", "assertion_error"):
        return UnlearnError(f"{source}: {field_problem(first)}")  # a check over a whole section
    example = ""
    default = field.get_default(call_default_factory=True) if field is not None else None
    if field is not None and model is None and default is not None:  # no example for an unset-by-default field
        example = f"; e.g. {'.'.join(names)}={show_value(default)}"
    return UnlearnError(f"{source}: field '{where}' {field_problem(first)} (got {first.get('input')!r}){example}")
