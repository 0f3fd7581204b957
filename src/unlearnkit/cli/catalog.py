"""`unlearn ls`, `unlearn show`, `unlearn validate`: what is registered, and recipes resolved and checked."""

from __future__ import annotations

from typing import List, Optional

import typer

from unlearnkit.cli.app import _split_recipe, app, friendly
from unlearnkit.errors import UnlearnError


@app.command("ls")
@friendly
def ls(what: str = typer.Argument("methods", help="methods | benchmarks | attacks | judges | backends | recipes | formats")):
    """List registered components or recipes, with one line of description each."""
    from unlearnkit.data.formats import PRESETS
    from unlearnkit.recipe import list_recipes
    from unlearnkit.registry import ATTACKS, BACKENDS, BENCHMARKS, JUDGES, METHODS, did_you_mean

    registries = {"methods": METHODS, "benchmarks": BENCHMARKS, "attacks": ATTACKS, "judges": JUDGES,
                  "backends": BACKENDS}
    if what in registries:
        registry = registries[what]
        for name in registry.names():
            typer.echo(f"{name:22s} {registry.describe(name)}")
    elif what == "recipes":
        from unlearnkit.recipe import find_recipe, _read_yaml

        for name in list_recipes():
            typer.echo(f"{name:28s} {_read_yaml(find_recipe(name)).get('description', '')}")
    elif what == "formats":
        for name, fmt in PRESETS.items():
            typer.echo(f"{name:16s} {type(fmt).__doc__.strip().splitlines()[0]}")
    else:
        valid = [*registries, "recipes", "formats"]
        raise UnlearnError(f"unknown list '{what}';{did_you_mean(what, valid)} valid: {', '.join(valid)}")


@app.command()
@friendly
def show(recipe: Optional[str] = typer.Argument(None), overrides: Optional[List[str]] = typer.Argument(None)):
    """Print a recipe fully resolved (base, overrides and method defaults applied)."""
    import yaml

    from unlearnkit.recipe import load_recipe

    name, overrides = _split_recipe(recipe, overrides)
    typer.echo(yaml.safe_dump(load_recipe(name, overrides).resolved(), sort_keys=False).rstrip())


@app.command()
@friendly
def validate(recipes: Optional[List[str]] = typer.Argument(None, help="Recipes to check (default: all).")):
    """Check recipes against the schema (fields, types, method names and fields)."""
    from unlearnkit.recipe import list_recipes, load_recipe

    names = list(recipes or list_recipes())
    failures = 0
    for name in names:
        try:
            load_recipe(name)
            typer.echo(f"ok     {name}")
        except UnlearnError as err:
            failures += 1
            typer.echo(f"error  {name}: {err}", err=True)
    if failures:
        raise typer.Exit(2)
