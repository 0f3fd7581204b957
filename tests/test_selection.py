"""Checkpoint selection: the rules on a scripted score, and the weights that come back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnkit.errors import UnlearnError
from unlearnkit.pipeline.selection import CheckpointSelector


class Scripted:
    """Scores from a list, one per call; the model's weight is set to the step so restore can be checked."""

    def __init__(self, values):
        self.values = list(values)

    def __call__(self, model):
        return self.values.pop(0)


def run(selector, steps, model):
    for step in range(1, steps + 1):
        with torch.no_grad():
            model.weight.fill_(float(step))
        selector(step, {})
    return selector.restore(steps)


def test_best_respects_the_retain_constraint_and_restores_the_weights():
    model = nn.Linear(1, 1, bias=False)
    scores = [{"forget_prob": 0.5, "retain_prob": 0.95}, {"forget_prob": 0.2, "retain_prob": 0.9},
              {"forget_prob": 0.1, "retain_prob": 0.5}, {"forget_prob": 0.3, "retain_prob": 0.99}]
    selector = CheckpointSelector(model, Scripted(scores), every=1, rule="best", metric="forget_prob", mode="min",
                                  min_retain_ratio=0.9, start={"retain_prob": 1.0})
    result = run(selector, 4, model)
    assert result["selected_step"] == 2  # step 3 forgets more but breaks retain_prob >= 0.9
    assert model.weight.item() == 2.0 and len(result["history"]) == 4


def test_first_at_or_below_is_muses_stopping_rule_and_falls_back_to_the_last_step():
    model = nn.Linear(1, 1, bias=False)
    scores = [{"forget_prob": v} for v in (0.8, 0.4, 0.3, 0.1)]
    selector = CheckpointSelector(model, Scripted(scores), every=1, rule="first_at_or_below", target=0.4)
    assert run(selector, 4, model)["selected_step"] == 2 and model.weight.item() == 2.0
    never = CheckpointSelector(model, Scripted([{"forget_prob": 0.9}] * 2), every=1, rule="first_at_or_below", target=0.1)
    result = run(never, 2, model)
    assert result["selected_step"] == 2 and result["fallback_to_last"] and model.weight.item() == 2.0


def test_scores_only_every_n_steps_and_bad_settings_are_user_errors():
    model = nn.Linear(1, 1, bias=False)
    selector = CheckpointSelector(model, Scripted([{"forget_prob": 0.5}, {"forget_prob": 0.4}]), every=2)
    assert [h["step"] for h in run(selector, 4, model)["history"]] == [2, 4]
    with pytest.raises(UnlearnError, match="needs a target"):
        CheckpointSelector(model, Scripted([]), every=1, rule="first_at_or_below")
    with pytest.raises(UnlearnError, match="unknown; valid: best, first_at_or_below"):
        CheckpointSelector(model, Scripted([]), every=1, rule="last")
    with pytest.raises(UnlearnError, match="not measured here"):
        CheckpointSelector(model, Scripted([{"x": 1.0}]), every=1)(1, {})


@pytest.mark.usefixtures("isolated_env")
def test_unlearn_run_selects_a_checkpoint_and_reports_privacy(tmp_path):
    from unlearnkit.pipeline import run
    from unlearnkit.recipe import load_recipe

    report = run(load_recipe("default", ["world.size=small", "train.steps=4", "eval.select.every=2",
                                         "eval.select.min_retain_ratio=0.5"]),
                 tmp_path / "r", progress=False, log=lambda message: None)
    selection = report["selection"]
    assert [h["step"] for h in selection["history"]] == [2, 4]
    assert selection["selected_step"] in (2, 4)
    allowed = [h for h in selection["history"] if h["retain_prob"] >= 0.5 * selection["start"]["retain_prob"]]
    best = min(h["forget_prob"] for h in allowed)
    assert next(h for h in selection["history"] if h["step"] == selection["selected_step"])["forget_prob"] == best
    # the privacy suite on forget vs holdout, with the retain model as reference and for privleak
    for key in ("mia_loss", "mia_zlib", "mia_reference", "mia_gradnorm", "mia_min_k", "mia_min_k_plus_plus",
                "privleak", "extraction_strength", "exact_memorization"):
        assert isinstance(report["after"][key], float), key
        assert isinstance(report["before"][key], float), key
    assert set(report["per_sample"]["after"]["privacy"]) == {"forget", "holdout"}


def test_selection_is_rejected_for_model_edits(tmp_path, isolated_env):
    from unlearnkit.pipeline import run
    from unlearnkit.recipe import load_recipe

    with pytest.raises(UnlearnError, match="nothing to select"):
        run(load_recipe("default", ["world.size=small", "method.name=task_vector", "train.steps=2",
                                    "eval.select.every=1"]), tmp_path / "tv", progress=False, log=lambda m: None)
    assert not (tmp_path / "tv").exists()


def test_best_forget_quality_with_model_utility_kept():
    model = nn.Linear(1, 1, bias=False)
    scores = [{"forget_quality": 0.2, "model_utility": 0.9}, {"forget_quality": 0.9, "model_utility": 0.5},
              {"forget_quality": 0.6, "model_utility": 0.85}]
    selector = CheckpointSelector(model, Scripted(scores), every=1, metric="forget_quality", mode="max",
                                  min_retain_ratio=0.9, constraint_metric="model_utility",
                                  start={"model_utility": 0.92})
    assert run(selector, 3, model)["selected_step"] == 3  # step 2 has the best quality but MU 0.5 < 0.828
