"""`unlearn run` with the robustness suite on the small tiny world: the cheap attacks run by default and the report
holds one table (rows = attacks, columns = forget metrics) with its worst-case row, in report.json, report.md,
report.html and the terminal; heavier attacks are recipe options; a run the guard rejects runs no attack."""

from __future__ import annotations

import json

import pytest

from unlearnkit.errors import UnlearnError
from unlearnkit.pipeline import run
from unlearnkit.recipe import load_recipe
from unlearnkit.registry import ATTACKS

pytestmark = pytest.mark.usefixtures("isolated_env")

SMALL = ["world.size=small", "train.steps=3"]


def quiet(recipe: str, overrides: list[str], out) -> dict:
    return run(load_recipe(recipe, overrides), out, progress=False, log=lambda message: None)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness") / "run"
    return out, quiet("default", [*SMALL, "attacks.latent=true", "attacks.quantize.bits=[8]"], out)


def test_every_attack_is_a_row_and_the_worst_case_is_the_maximum(attacked):
    out, report = attacked
    section = report["robustness"]
    assert section["metrics"] == ["forget_prob", "forget_rouge", "forget_logit_lens"]
    ran = {row["attack"] for row in section["rows"]}
    assert ran == set(ATTACKS.names())  # the cheap defaults and the latent attack asked for
    for row in section["rows"]:
        assert set(row["metrics"]) == set(row["forgetting_kept"]) == set(section["metrics"])
        assert all(v is None or 0.0 <= v <= 1.0 for v in row["forgetting_kept"].values())
    for key in section["metrics"]:
        values = [section["unlearned"][key], *(row["metrics"][key] for row in section["rows"])]
        assert section["worst_case"]["metrics"][key] == max(values)
        labels = ["none (unlearned model)", *(row["label"] for row in section["rows"])]
        assert section["worst_case"]["attack"][key] == labels[values.index(max(values))]
    assert section["unlearned"]["forget_prob"] == report["after"]["forget_prob"]
    assert "attacks" in report["timings"]


def test_relearning_reports_a_recovery_curve(attacked):
    _, report = attacked
    (relearn,) = [row for row in report["robustness"]["rows"] if row["attack"] == "relearn"]
    assert relearn["settings"]["steps"] == 10 and relearn["settings"]["every"] == 5
    assert [p["step"] for p in relearn["curve"]] == [0, 5, 10]
    assert relearn["curve"][0]["forget_prob"] == pytest.approx(report["after"]["forget_prob"], rel=1e-4)
    assert relearn["curve"][-1]["forget_prob"] == relearn["metrics"]["forget_prob"]
    assert relearn["metrics"]["forget_prob"] > report["after"]["forget_prob"]  # relearning brings some back
    kept = relearn["forgetting_kept"]["forget_prob"]
    assert kept is not None and 0.0 <= kept <= 1.0


def test_the_table_is_in_every_view(attacked):
    out, report = attacked
    text = (out / "report.md").read_text()
    assert "Robustness" in text and "| **worst case** |" in text and "| none (unlearned model) |" in text
    for row in report["robustness"]["rows"]:
        assert f"| {row['label']} |" in text
    page = (out / "report.html").read_text()
    assert "<h2>Robustness</h2>" in page and "Recovery under relearning" in page
    assert json.loads((out / "report.json").read_text())["robustness"] == report["robustness"]


def test_attacks_can_be_switched_off(tmp_path):
    off = [f"attacks.{name}=false" for name in ATTACKS.names()]
    report = quiet("default", [*SMALL, *off, "eval.before=false"], tmp_path / "off")
    assert "robustness" not in report
    assert "Robustness" not in (tmp_path / "off" / "report.md").read_text()


def test_bad_attack_settings_are_recipe_errors():
    with pytest.raises(UnlearnError, match="bits"):
        load_recipe("default", ["attacks.quantize.bits=[16]"])
    with pytest.raises(UnlearnError, match="steps"):
        load_recipe("default", ["attacks.relearn.step=3"])  # did-you-mean on the field
    with pytest.raises(UnlearnError, match="did you mean 'jailbreak'"):
        load_recipe("default", ["attacks.jailbrake=true"])
    with pytest.raises(UnlearnError, match="role_play"):
        load_recipe("default", ["attacks.jailbreak.templates=[roleplay]"])
    with pytest.raises(UnlearnError, match="nf4"):
        load_recipe("default", ["attacks.quantize.scheme=nf4"])  # nf4 is 4-bit only
    recipe = load_recipe("default", ["attacks.paraphrase=false"])
    assert recipe.attacks == {"paraphrase": {"enabled": False}}
    assert recipe.resolved()["attacks"]["relearn"]["steps"] == 10  # `unlearn show` lists every attack


def test_guard_rejection_skips_attacks(tmp_path):
    report = quiet("attack/refusal_unlearning", ["world.size=small", "eval.max_new_tokens=24",
                                                 "safety.decoding.max_new_tokens=32", "train.steps=2",
                                                 "guard.enabled=true", "attacks.relearn.enabled=true",
                                                 "attacks.quantize=true"], tmp_path / "g")
    assert report["guard"]["decision"] == "rejected"
    assert "robustness" not in report
    assert not (tmp_path / "g" / "model").exists()
