"""`unlearn run` with attacks on the small tiny world: relearning runs by default and reports how much
forgetting it kept; quantization and the paraphrase probe add their sections; a run the guard rejects
runs no attack."""

from __future__ import annotations

import pytest

from unlearnkit.errors import UnlearnError
from unlearnkit.pipeline import run
from unlearnkit.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("isolated_env")

SMALL = ["world.size=small", "train.steps=3"]


def quiet(recipe: str, overrides: list[str], out) -> dict:
    return run(load_recipe(recipe, overrides), out, progress=False, log=lambda message: None)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness") / "run"
    return out, quiet("default", [*SMALL, "attacks.quantize.bits=[8]", "attacks.paraphrase=true"], out)


def test_relearn_runs_by_default_on_the_tiny_world(attacked):
    out, report = attacked
    relearn = report["relearn"]
    assert relearn["settings"]["enabled"] is True and relearn["settings"]["steps"] == 10
    assert relearn["settings"]["samples_used"] == min(10, len(report["per_sample"]["after"]["forget"]["question"]))
    assert set(relearn["forgetting_kept"]) == {"forget_prob", "forget_rouge"}
    kept = relearn["forgetting_kept"]["forget_prob"]
    assert kept is not None and 0.0 <= kept <= 1.0  # the small run lowers forget_prob, so there is an effect
    assert relearn["metrics"]["forget_prob"] > report["after"]["forget_prob"]  # relearning brings some back
    assert "attacks" in report["timings"] and report["timings"]["attacks"] < 20
    text = (out / "report.md").read_text()
    assert "Robustness" in text and "| relearned (" in text


def test_quantize_and_paraphrase_sections(attacked):
    out, report = attacked
    assert set(report["quantize"]) == {"8"}
    eight = report["quantize"]["8"]
    assert eight["metrics"]["forget_prob"] == pytest.approx(report["after"]["forget_prob"], abs=0.05)
    for key, value in eight["forgetting_kept"].items():
        assert value is None or eight["recovery"][key] == pytest.approx(1 - value)
    paraphrase = report["paraphrase"]
    assert set(paraphrase["metrics"]) >= {"forget_prob", "forget_rouge"}
    assert all(k.startswith("forget_") for k in paraphrase["metrics"])
    assert paraphrase["original"]["forget_prob"] == report["after"]["forget_prob"]
    assert paraphrase["metrics"]["forget_prob"] != report["after"]["forget_prob"]  # other questions were asked
    text = (out / "report.md").read_text()
    assert "| 8-bit weights" in text and "| paraphrased forget questions |" in text


def test_relearn_can_be_switched_off(tmp_path):
    report = quiet("default", [*SMALL, "attacks.relearn.enabled=false", "eval.before=false"], tmp_path / "off")
    assert "relearn" not in report and "quantize" not in report and "paraphrase" not in report
    assert "Robustness" not in (tmp_path / "off" / "report.md").read_text()


def test_bad_quantize_bits_are_a_recipe_error():
    with pytest.raises(UnlearnError, match="bits"):
        load_recipe("default", ["attacks.quantize.bits=[16]"])
    with pytest.raises(UnlearnError, match="relearn"):
        load_recipe("default", ["attacks.relearn.step=3"])  # did-you-mean on the new section


def test_guard_rejection_skips_attacks(tmp_path):
    report = quiet("attack/refusal_unlearning", ["world.size=small", "eval.max_new_tokens=24",
                                                 "safety.decoding.max_new_tokens=32", "train.steps=2",
                                                 "guard.enabled=true", "attacks.relearn.enabled=true",
                                                 "attacks.quantize.bits=[8]"], tmp_path / "g")
    assert report["guard"]["decision"] == "rejected"
    assert "relearn" not in report and "quantize" not in report
    assert not (tmp_path / "g" / "model").exists()
