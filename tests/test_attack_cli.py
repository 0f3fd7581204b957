"""`unlearn attack --model M`: the robustness suite on any saved model, from the README's instructions."""

from __future__ import annotations

import json

import pytest

from unlearnkit.registry import ATTACKS

pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture(scope="module")
def unlearned(tmp_path_factory):
    from unlearnkit.pipeline import run
    from unlearnkit.recipe import load_recipe

    out = tmp_path_factory.mktemp("attack_cli") / "run"
    off = [f"attacks.{name}=false" for name in ATTACKS.names()]
    run(load_recipe("default", ["world.size=small", "train.steps=4", *off]), out, progress=False,
        log=lambda message: None)
    return out / "model"


def test_attack_a_saved_model(cli, unlearned, tmp_path):
    out = tmp_path / "attack"
    result = cli("attack", "--model", unlearned, "--only", "quantize,paraphrase", "world.size=small",
                 "attacks.quantize.bits=[4]", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "attack.json").read_text())
    assert report["before_model"] == "world:target" and report["model"] == str(unlearned)
    assert [row["attack"] for row in report["robustness"]["rows"]] == ["paraphrase", "quantize"]
    assert report["before"]["forget_prob"] > report["after"]["forget_prob"]  # the starting model knew more
    assert all(row["forgetting_kept"]["forget_prob"] is not None for row in report["robustness"]["rows"])
    text = (out / "attack.md").read_text()
    assert "| **worst case** |" in text and "Starting model: `world:target`" in text
    assert "worst-case" in result.stdout and "attack.json" in result.stdout


def test_without_a_starting_model_kept_is_empty(cli, unlearned, tmp_path):
    result = cli("attack", "-m", unlearned, "--only", "quantize", "world.size=small", "attacks.quantize.bits=[8]",
                 "--no-before", "-o", tmp_path / "a", "-q")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "a" / "attack.json").read_text())
    assert report["before"] is None
    assert all(v is None for v in report["robustness"]["rows"][0]["forgetting_kept"].values())


@pytest.mark.parametrize("args, message", [
    (["--only", "quantise"], "did you mean 'quantize'"),
    (["--before", "world:target", "--no-before"], "give one of them"),
    (["attacks.relearn.stepz=3"], "did you mean 'steps'"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, unlearned, tmp_path, args, message):
    result = cli("attack", "-m", unlearned, "world.size=small", *args, "-o", tmp_path / "bad", "-q")
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_ls_attacks_lists_every_registered_attack(cli):
    result = cli("ls", "attacks")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == ATTACKS.names() and all(len(line.split()) > 2 for line in result.stdout.splitlines())
