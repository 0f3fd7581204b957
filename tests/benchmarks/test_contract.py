"""Contract over every registered benchmark: it loads small offline data, evaluates a tiny model through the
one evaluation path, and reports exactly the metric keys it declares (all of them, or a selection)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnkit.benchmarks.suite import evaluate, load_benchmark
from unlearnkit.data.formats import get_format
from unlearnkit.recipe import validate_recipe
from unlearnkit.registry import BENCHMARKS

pytestmark = pytest.mark.usefixtures("isolated_env")


def _tofu_dir(root: Path) -> dict:
    qa = [{"question": f"Question {i}?", "answer": f"Answer number {i}."} for i in range(3)]
    perturbed = [{**r, "paraphrased_answer": f"It is {i}.", "perturbed_answer": ["No.", "Maybe."],
                  "paraphrased_question": f"Ask {i}?"} for i, r in enumerate(qa)]
    root.mkdir()
    for name, rows in {"forget01_perturbed": perturbed, "retain_perturbed": perturbed, "real_authors_perturbed":
                       perturbed, "world_facts_perturbed": perturbed, "retain99": qa, "holdout01": qa}.items():
        (root / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"data_dir": str(root), "forget_split": "forget01"}


def _choices(root: Path, files: tuple[str, ...]) -> dict:
    root.mkdir()
    rows = [{"question": f"Which is {i}?", "choices": ["one", "two", "three", "four"], "answer": i % 4} for i in range(2)]
    for name in files:
        (root / name).write_text(json.dumps(rows))
    return {"data_dir": str(root)}


def _mmlu(root: Path) -> dict:
    root.mkdir()
    (root / "astronomy_test.csv").write_text("What is the sun?,a star,a planet,a moon,a comet,A\n")
    return {"data_dir": str(root), "subsets": ["astronomy"]}


# how each registered benchmark runs offline and small; a new benchmark must add itself here
OFFLINE = {
    "world": lambda tmp: {},
    "safety": lambda tmp: {},
    "muse": lambda tmp: {"data_dir": "world:tiny"},
    "tofu": lambda tmp: _tofu_dir(tmp / "tofu"),
    "wmdp": lambda tmp: _choices(tmp / "wmdp", ("bio_questions.json", "cyber_questions.json")),
    "mmlu": lambda tmp: _mmlu(tmp / "mmlu"),
}


def test_every_registered_benchmark_has_an_offline_setup():
    assert sorted(OFFLINE) == BENCHMARKS.names()


@pytest.fixture(scope="module")
def world_model(cache_dir):
    from unlearnkit.model import load_model, load_tokenizer
    from unlearnkit.world.build import ensure_world

    target = ensure_world(cache_dir, size="small", progress=False, log=lambda m: None).target_dir
    return load_model(str(target), device="cpu"), load_tokenizer(str(target))


@pytest.mark.parametrize("name", BENCHMARKS.names())
def test_benchmark_reports_exactly_the_metrics_it_declares(name, tmp_path, world_model, cache_dir):
    recipe = validate_recipe({"data": {"benchmark": name, **OFFLINE[name](tmp_path)},
                              "eval": {"max_new_tokens": 4, "batch_size": 8},
                              "world": {"size": "small", "cache_dir": str(cache_dir)}}, "contract")
    data = load_benchmark(recipe.data, recipe.world, log=lambda m: None, progress=False)
    component = data.component
    assert component.name == name and data.name == name
    model, tokenizer = world_model
    fmt = get_format(recipe.data.format)
    declared = component.metric_names(data, recipe.eval)
    result = evaluate(model, tokenizer, data, fmt, recipe.eval, progress=False)
    assert list(result["metrics"]) == declared
    assert result["passes"]["sequences"]  # it ran through the evaluator
    chosen = declared[:1]
    assert list(evaluate(model, tokenizer, data, fmt, recipe.eval, progress=False, metrics=chosen)["metrics"]) == chosen
