"""Recipes: loading, `a.b=c` overrides, one level of `base:`, and friendly validation errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from unlearnkit.errors import UnlearnError
from unlearnkit.recipe import Recipe, list_recipes, load_recipe
from unlearnkit.registry import METHODS


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_load_default():
    recipe = load_recipe()
    assert isinstance(recipe, Recipe)
    assert recipe.model.name == "world:target"
    assert recipe.data.benchmark == "world"
    assert recipe.method["name"] == "npo"
    assert recipe.method["beta"] == pytest.approx(0.1)
    assert recipe.train.lr == pytest.approx(5e-4)
    assert recipe.world.size == "default"
    assert recipe.build_method().registry_name == "npo"
    assert load_recipe("default").model_dump() == recipe.model_dump()


def test_overrides_are_typed():
    recipe = load_recipe("default", ["method.beta=0.05", "train.lr=1e-4", "train.batch_size=4",
                                     "world.size=small", "eval.before=false"])
    assert recipe.method["beta"] == 0.05 and isinstance(recipe.method["beta"], float)
    assert recipe.build_method().beta == 0.05
    assert recipe.train.lr == 1e-4 and isinstance(recipe.train.lr, float)
    assert recipe.train.batch_size == 4 and isinstance(recipe.train.batch_size, int)
    assert recipe.world.size == "small"
    assert recipe.eval.before is False


def test_exponent_override_on_method_field_is_a_number():
    # PyYAML reads "1e-4" (no dot) as a string; the recipe must still hold (and report) a float
    recipe = load_recipe("default", ["method.beta=1e-4"])
    assert recipe.method["beta"] == pytest.approx(1e-4)
    assert isinstance(recipe.method["beta"], float)
    assert isinstance(recipe.resolved()["method"]["beta"], float)


def test_changing_method_drops_fields_of_the_old_method():
    recipe = load_recipe("default", ["method.name=grad_diff"])
    assert recipe.method == {"name": "grad_diff"}  # npo's beta (and the file's retain_weight) are gone
    assert "beta" not in recipe.resolved()["method"]
    assert recipe.build_method().registry_name == "grad_diff"
    # fields given after the name apply to the new method
    recipe = load_recipe("default", ["method.name=grad_diff", "method.retain_weight=2"])
    assert recipe.method == {"name": "grad_diff", "retain_weight": 2.0}
    # naming the same method keeps its fields
    assert load_recipe("default", ["method.name=npo"]).method["beta"] == pytest.approx(0.1)


def test_override_without_equals_sign():
    with pytest.raises(UnlearnError, match="section.field=value"):
        load_recipe("default", ["train.lr"])


def test_base_inheritance_one_level(tmp_path):
    write(tmp_path / "parent.yaml", """\
        description: parent
        model: {name: "world:target"}
        method: {name: npo, beta: 0.1, retain_weight: 1.0}
        train: {epochs: 3, lr: 1.0e-3, batch_size: 4}
        eval: {max_new_tokens: 16}
    """)
    child = write(tmp_path / "child.yaml", """\
        base: parent.yaml
        description: child
        method: {beta: 0.3}
        train: {lr: 2.0e-3}
    """)
    recipe = load_recipe(str(child))
    assert recipe.description == "child"
    assert recipe.train.lr == pytest.approx(2e-3)
    assert recipe.train.epochs == 3 and recipe.train.batch_size == 4  # inherited, merged per field
    assert recipe.eval.max_new_tokens == 16
    assert recipe.method == {"name": "npo", "beta": 0.3, "retain_weight": 1.0}  # same method: merged

    other = write(tmp_path / "other.yaml", "base: parent.yaml\nmethod: {name: grad_ascent}\n")
    assert load_recipe(str(other)).method == {"name": "grad_ascent"}  # another method: replaced

    # overrides apply on top of the inherited recipe
    assert load_recipe(str(child), ["train.epochs=7"]).train.epochs == 7


def test_base_two_levels_is_an_error(tmp_path):
    write(tmp_path / "grandparent.yaml", "train: {lr: 1.0e-3}\n")
    write(tmp_path / "parent.yaml", "base: grandparent.yaml\ntrain: {epochs: 2}\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\n")
    with pytest.raises(UnlearnError, match="only one level of 'base:'"):
        load_recipe(str(child))


def test_missing_base_is_an_error(tmp_path):
    child = write(tmp_path / "child.yaml", "base: nowhere.yaml\n")
    with pytest.raises(UnlearnError, match="nowhere.yaml does not exist"):
        load_recipe(str(child))


def test_unknown_recipe_name():
    with pytest.raises(UnlearnError, match="recipe 'defualt' not found; did you mean 'default'"):
        load_recipe("defualt")


def test_invalid_yaml_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "train: {lr: [1, 2\n")
    with pytest.raises(UnlearnError, match="not valid YAML"):
        load_recipe(str(bad))
    not_mapping = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(UnlearnError, match="must be a mapping"):
        load_recipe(str(not_mapping))


def test_unknown_top_level_field():
    with pytest.raises(UnlearnError, match=r"unknown field 'trian'; did you mean 'train'\?") as info:
        load_recipe("default", ["trian.lr=1"])
    assert "valid fields here: model, data, method, train" in str(info.value)


def test_unknown_top_level_field_in_file(tmp_path):
    path = write(tmp_path / "r.yaml", "outputdir: runs/x\n")
    with pytest.raises(UnlearnError, match="did you mean 'output_dir'"):
        load_recipe(str(path))


def test_misspelled_section_field():
    with pytest.raises(UnlearnError) as info:
        load_recipe("default", ["train.lrr=1e-4"])
    message = str(info.value)
    assert "unknown field 'train.lrr'" in message
    assert "did you mean 'lr'" in message
    assert "batch_size" in message  # lists the valid fields of the section


def test_misspelled_nested_lora_field():
    with pytest.raises(UnlearnError, match=r"unknown field 'model.lora.rr'; did you mean 'r'\?"):
        load_recipe("default", ["model.lora.rr=4"])


@pytest.mark.parametrize("override, field", [
    ("train.batch_size=abc", "train.batch_size"),
    ("train.epochs=many", "train.epochs"),
    ("eval.before=maybe", "eval.before"),
    ("world.size=huge", "world.size"),
])
def test_wrong_type_names_the_field(override, field):
    with pytest.raises(UnlearnError) as info:
        load_recipe("default", [override])
    message = str(info.value)
    assert f"field '{field}'" in message
    assert override.split("=", 1)[1] in message  # shows what it got


def test_unknown_method():
    with pytest.raises(UnlearnError) as info:
        load_recipe("default", ["method.name=npp"])
    message = str(info.value)
    assert "unknown method 'npp'" in message
    assert "did you mean 'npo'" in message
    for name in ("dpo", "grad_ascent", "grad_diff", "idk", "npo", "simnpo"):
        assert name in message


def test_misspelled_method_field():
    with pytest.raises(UnlearnError) as info:
        load_recipe("default", ["method.betta=1"])
    message = str(info.value)
    assert "unknown field 'betta' for method 'npo'" in message
    assert "did you mean 'beta'" in message


def test_wrong_type_method_field():
    with pytest.raises(UnlearnError, match="field 'beta'"):
        load_recipe("default", ["method.beta=lots"])


def test_method_without_name(tmp_path):
    path = write(tmp_path / "r.yaml", "method: {beta: 0.1}\n")
    with pytest.raises(UnlearnError, match="method needs a name"):
        load_recipe(str(path))


def test_resolved_includes_method_defaults():
    recipe = load_recipe("default", ["method.beta=0.2"])
    resolved = recipe.resolved()
    assert resolved["method"]["name"] == "npo"
    assert resolved["method"]["beta"] == pytest.approx(0.2)
    for key, default in METHODS.fields("npo").items():
        assert key in resolved["method"]
        if key not in recipe.method:
            assert resolved["method"][key] == default
    # every section is there, with schema defaults filled in
    assert set(resolved) >= {"model", "data", "method", "train", "eval", "world", "seed", "output_dir"}
    assert resolved["train"]["grad_accum"] == 1
    # plain YAML/JSON types only: it round-trips through yaml.safe_dump
    assert yaml.safe_load(yaml.safe_dump(resolved)) == resolved
    # and it validates back to the same recipe
    assert load_recipe("default", ["method.beta=0.2"]).resolved() == resolved


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_resolved_for_every_method(method):
    resolved = load_recipe("default", [f"method.name={method}"]).resolved()
    assert resolved["method"] == {"name": method, **yaml.safe_load(yaml.safe_dump(METHODS.fields(method)))}


def test_every_shipped_recipe_validates():
    names = list_recipes()
    assert "default" in names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.build_method() is not None
        assert recipe.resolved()["method"]["name"] == recipe.method["name"]
