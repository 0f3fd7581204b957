"""unlearnkit: remove knowledge from language models, prove it is gone, and report.

The public Python API (the CLI `unlearn` is a thin layer over it)::

    import unlearnkit

    report = unlearnkit.run("default", overrides=["method.name=grad_diff"])   # recipe → report dict
    result = unlearnkit.unlearn(model, tokenizer, forget_rows, retain_rows, method="npo", lr=1e-5)
    metrics = unlearnkit.evaluate(model, tokenizer, splits, retain_truth_ratios=...)
    recipe = unlearnkit.load_recipe("tofu/npo", ["method.beta=0.05"])
    unlearnkit.list_components("methods")

Heavy libraries (torch, transformers) are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import Any, Iterable

__version__ = "0.1.0"
__all__ = ["run", "unlearn", "evaluate", "load_recipe", "list_components", "UnlearnError", "__version__"]

from unlearnkit.errors import UnlearnError


def load_recipe(name: str | None = None, overrides: Iterable[str] = ()):
    """A validated `Recipe` from a name under recipes/ or a YAML path, with `a.b=c` overrides."""
    from unlearnkit.recipe import load_recipe as _load

    return _load(name, list(overrides))


def run(recipe: Any = "default", overrides: Iterable[str] = (), out_dir: str | None = None,
        progress: bool = True, resume: bool = False, restart: bool = False) -> dict:
    """Run a recipe end to end (evaluate → unlearn → evaluate → report); returns the report dict.
    `recipe` is a name, a path, or a `Recipe`. `resume` continues an interrupted run in out_dir.partial
    from its last checkpoint; `restart` discards one (as `unlearn run --resume / --restart`)."""
    from unlearnkit.pipeline import run as _run
    from unlearnkit.recipe import Recipe

    loaded = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides)
    return _run(loaded, out_dir, progress=progress, log=(print if progress else (lambda message: None)),
                resume=resume, restart=restart)


def unlearn(model, tokenizer, forget: list[dict], retain: list[dict] | None = None, method: Any = "npo", *,
            format: str = "openunlearning", idk_answers: list[str] | None = None,
            generic_texts: list[str] | None = None, seed: int = 0, max_length: int = 512,
            out_dir: str | None = None, **train: Any):
    """Unlearn `forget` rows ({question, answer}, or {text} for bare-text methods) from `model` with one
    method and the one trainer (multi-phase methods such as task_vector through their `apply`).

    `method` is a registered name (fields via a dict: ``{"name": "npo", "beta": 0.05}``) or a method
    instance; `train` holds `TrainConfig` fields (lr, epochs, steps, batch_size, ...). Returns the
    `TrainResult` (model, loss history, trainable parameter counts)."""
    from unlearnkit.data.formats import get_format
    from unlearnkit.pipeline import training_data, unlearn_once
    from unlearnkit.recipe import validate_recipe
    from unlearnkit.registry import METHODS
    from unlearnkit.train import TrainConfig

    extra = {k: train.pop(k) for k in ("betas", "progress") if k in train}  # TrainConfig-only fields
    train = validate_recipe({"train": train}, "unlearn(...) train settings").train.model_dump(exclude_unset=True)
    train.update(extra)

    if isinstance(method, str):
        method = METHODS.build(method)
    elif isinstance(method, dict):
        method = METHODS.build(method["name"], **{k: v for k, v in method.items() if k != "name"})
    data = training_data(method, tokenizer, get_format(format), forget, retain, max_length=max_length,
                         idk_answers=idk_answers, generic_texts=generic_texts, seed=seed)
    return unlearn_once(model, method, data, TrainConfig(seed=seed, **train), out_dir)


def evaluate(model, tokenizer, splits, *, format: str = "openunlearning", retain_truth_ratios=None,
             batch_size: int = 32, max_new_tokens: int = 200, progress: bool = False) -> dict:
    """TOFU metrics (OpenUnlearning's definitions) on `splits` (attributes forget, retain,
    real_authors, world_facts in TOFU's perturbed schema, e.g. `unlearnkit.data.tofu.load_tofu(...)`).
    Returns {"metrics", "per_sample", "forget_truth_ratios", "seconds"}."""
    from unlearnkit.benchmarks.tofu import evaluate_tofu
    from unlearnkit.data.formats import get_format

    return evaluate_tofu(model, tokenizer, splits, get_format(format), batch_size=batch_size,
                         max_new_tokens=max_new_tokens, retain_truth_ratios=retain_truth_ratios,
                         progress=progress).to_dict()


def list_components(kind: str = "methods") -> list[str]:
    """Names of registered components: methods, formats or recipes."""
    from unlearnkit.data.formats import PRESETS
    from unlearnkit.recipe import list_recipes
    from unlearnkit.registry import METHODS, did_you_mean

    kinds = {"methods": METHODS.names, "formats": lambda: list(PRESETS), "recipes": list_recipes}
    if kind not in kinds:
        raise UnlearnError(f"unknown component kind '{kind}';{did_you_mean(kind, list(kinds))} valid: {', '.join(kinds)}")
    return kinds[kind]()
