"""`unlearn eval`: --model replaces a recipe's model; options the recipe owns are refused with --recipe."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app

pytestmark = pytest.mark.usefixtures("isolated_env")


def test_model_replaces_the_recipes_model(env, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--recipe", "default", "--model", "world:retain", "world.size=small",
                                      "eval.max_new_tokens=8", "--out", str(out), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["model"] == "world:retain" and evaluated["recipe"]["model"]["name"] == "world:retain"
    assert evaluated["manifest"]["models"]["model"]["path"].endswith("/retain")


def test_an_option_the_recipe_sets_is_refused_with_recipe(env, tmp_path):
    result = CliRunner().invoke(app, ["eval", "--recipe", "default", "--forget-split", "forget05",
                                      "--out", str(tmp_path / "e")], env=env)
    assert result.exit_code == 2 and "--forget-split does not apply with --recipe" in result.stderr
    assert not (tmp_path / "e").exists()
