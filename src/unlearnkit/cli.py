"""`unlearn`: the command line. Every command turns user errors into one line and a non-zero exit."""

from __future__ import annotations

import functools
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Callable, List, Optional

import typer

from unlearnkit.errors import UnlearnError
from unlearnkit.outputs import OutputInterrupted
from unlearnkit.secrets import redact

# exit statuses (README "Exit statuses"): 0 done; 1 internal error (a bug); 2 user error;
# 3 the safety-regression guard rejected the run; 4 the divergence guard stopped training; 130 interrupted
EXIT_INTERNAL, EXIT_USER, EXIT_GUARD_REJECTED, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 4, 130

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    help="Remove knowledge from language models, prove it is gone, and report.\n\n"
         "Start with `unlearn run`: it unlearns part of the bundled tiny world (offline, CPU, minutes)"
         " and prints a before/after table. Recipes are YAML; override any field as section.field=value.",
)
world_app = typer.Typer(help="The bundled worlds: tiny (synthetic authors; target and retain models) and safety"
                             " (harmful and benign requests; compliant and aligned models).",
                        no_args_is_help=True)
app.add_typer(world_app, name="world")


def friendly(fn: Callable) -> Callable:
    """Run a command; UnlearnError -> 'error: ...' and exit 2; anything unexpected -> one line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UnlearnError as err:
            typer.echo(f"error: {redact(str(err))}", err=True)
            raise typer.Exit(EXIT_USER) from None
        except OutputInterrupted as err:  # checkpoints kept in DIR.partial
            again = command_line()
            again += "" if "--resume" in again.split() else " --resume"
            typer.echo(f"{err}:\n  {again}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; nothing was written to the output directory", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as err:  # a bug, not a user error: one line, traceback on request
            if os.environ.get("UNLEARN_DEBUG"):
                traceback.print_exc()
            first = redact(str(err)).strip().splitlines()[0] if str(err).strip() else ""
            typer.echo(f"internal error: {type(err).__name__}: {first} (set UNLEARN_DEBUG=1 for the traceback;"
                       " please report it)", err=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def command_line() -> str:
    """This command as the user could type it again (`unlearn ...`)."""
    return shlex.join(["unlearn", *sys.argv[1:]])


def _split_recipe(recipe: Optional[str], overrides: Optional[List[str]]) -> tuple[Optional[str], list[str]]:
    overrides = list(overrides or [])
    if recipe is not None and "=" in recipe:
        return None, [recipe, *overrides]
    return recipe, overrides


@app.command()
@friendly
def run(
    recipe: Optional[str] = typer.Argument(None, help="Recipe name (see `unlearn ls recipes`) or a .yaml path."
                                           " Default: recipes/default.yaml, the tiny world."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Field overrides: method.name=grad_diff train.lr=1e-4"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: the recipe's output_dir)."
                                       " A new folder, or one an earlier run wrote; never a folder holding other files."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in DIR.partial from its last"
                                " checkpoint (same recipe and overrides); reproduces the uninterrupted run."),
    restart: bool = typer.Option(False, "--restart", help="Discard an interrupted run's DIR.partial and start over."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Unlearn with a recipe, evaluate before and after, write DIR/report.{json,md,html} and DIR/model.

    The run writes into DIR.partial and replaces DIR only when it is complete. Ctrl-C stops after the
    current training step and saves a checkpoint there (Ctrl-C twice stops at once); `--resume` continues.
    Set train.save_every=N to also checkpoint every N steps (what survives a killed process).

    \b
    Exit status: 0 done; 2 bad input (one `error:` line, nothing written); 3 the safety-regression guard
    rejected the run (report written, no model); 4 the divergence guard stopped training (report and the
    last finite weights written); 130 interrupted; 1 an internal error (a bug: please report it).
    """
    from unlearnkit.pipeline import run as run_pipeline
    from unlearnkit.recipe import load_recipe
    from unlearnkit.report import print_table

    if resume and restart:
        raise UnlearnError("--resume continues an interrupted run and --restart discards it; give one of them")
    name, overrides = _split_recipe(recipe, overrides)
    loaded = load_recipe(name, overrides)
    report = run_pipeline(loaded, out, progress=not quiet, log=lambda m: typer.echo(m, err=True), resume=resume,
                          restart=restart, command=sys.argv[1:])
    print_table(report)
    guard = report.get("guard") or {}
    if guard.get("decision") == "rejected":
        typer.echo(f"wrote {report['output_dir']}/report.json and report.md; no model (total {report['timings']['total']} s)")
        typer.echo(f"guard: rejected at the {guard['stage']} stage: " + "; ".join(guard["reasons"]), err=True)
        raise typer.Exit(EXIT_GUARD_REJECTED)
    typer.echo(f"wrote {report['output_dir']}/report.json, report.md and model/ "
               f"(total {report['timings']['total']} s)")
    stopped = (report.get("train") or {}).get("stopped")
    if stopped:
        typer.echo(f"diverged: the divergence guard stopped training ({stopped}); lower train.lr or set"
                   " train.max_grad_norm", err=True)
        raise typer.Exit(EXIT_DIVERGED)


@app.command()
@friendly
def compare(
    recipe: Optional[str] = typer.Argument(None, help="A compare recipe (compare/world), or a run recipe (default, a"
                                           " .yaml path) with --methods. Default: compare/world; default with --methods."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Overrides for every method: world.size=small train.steps=20"),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods (`unlearn ls methods`);"
                                          " with a compare recipe, replaces its list."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="One method's override, METHOD:section.field=value"
                                             " (repeatable): --set npo:method.beta=0.2"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: runs/compare, or the"
                                       " compare recipe's output_dir)."),
    in_process: bool = typer.Option(False, "--in-process", help="Run the methods in this process, not one fresh process"
                                    " each: no start-up cost, but peak RSS is then a running maximum, not per method."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-run output or progress bars."),
):
    """Run several methods on the same world; write one table and a forget-quality/utility plot.

    Each method runs as RECIPE + method.name=METHOD + OVERRIDES (+ its --set overrides), each in its own
    process so its peak memory is its own. Writes DIR/compare.json, compare.md (printed at the end),
    compare.png and DIR/runs/METHOD/ (each method's report and model). A failing method does not stop the
    others: its row holds the error and the command exits non-zero after writing the table.

    \b
    Examples:
      unlearn compare default --methods npo,grad_ascent
      unlearn compare compare/world                   # every method on the tiny world
      unlearn compare compare/world --methods npo,simnpo world.size=small train.steps=20
      unlearn compare default --methods npo,dpo --set npo:method.beta=0.2 -o runs/npo_vs_dpo
    """
    from unlearnkit.compare import compare as run_compare, parse_method_overrides

    name, overrides = _split_recipe(recipe, overrides)
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    result = run_compare(name, names, overrides, out, progress=not quiet, isolate=not in_process,
                         log=lambda m: typer.echo(m, err=True), method_overrides=parse_method_overrides(sets or []),
                         command=sys.argv[1:])
    typer.echo((Path(result["output_dir"]) / "compare.md").read_text().rstrip())
    typer.echo(f"wrote {result['output_dir']}/compare.json, compare.md, compare.png and runs/")
    if result["failed"]:
        raise UnlearnError(f"{len(result['failed'])} of {len(result['rows'])} methods failed"
                           f" ({', '.join(result['failed'])}); the table above says why")


# `unlearn eval` lives in cli_eval.py; importing it here registers it (and keeps its place in --help)
from unlearnkit import cli_eval  # noqa: E402,F401


@app.command("ls")
@friendly
def ls(what: str = typer.Argument("methods", help="methods | judges | backends | recipes | formats")):
    """List registered components or recipes, with one line of description each."""
    from unlearnkit.data.formats import PRESETS
    from unlearnkit.recipe import list_recipes
    from unlearnkit.registry import BACKENDS, JUDGES, METHODS, did_you_mean

    registries = {"methods": METHODS, "judges": JUDGES, "backends": BACKENDS}
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


WORLDS = ("tiny", "safety")


def _check_world(which: str) -> None:
    from unlearnkit.registry import did_you_mean

    if which not in WORLDS:
        raise UnlearnError(f"unknown world '{which}';{did_you_mean(which, list(WORLDS))} valid: {', '.join(WORLDS)}")


@world_app.command("build")
@friendly
def world_build(which: str = typer.Argument("tiny", help="tiny (fictitious authors) | safety (compliant and aligned models)."),
                cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Default: $UNLEARNKIT_CACHE or ~/.cache/unlearnkit."),
                seed: int = typer.Option(0, "--seed"), force: bool = typer.Option(False, "--force", help="Rebuild even if cached."),
                size: str = typer.Option("default", "--size", help="default | small (builds in seconds).")):
    """Generate a bundled world and train its models (cached): tiny (target, retain) or safety (compliant, aligned)."""
    from unlearnkit.cache import cache_lock

    _check_world(which)
    if which == "safety":
        from unlearnkit.world.safety_build import build_safety_world, load_safety_world, safety_dir

        with cache_lock(safety_dir(cache_dir, seed, size).name, cache_dir):  # one build across processes
            safety = None if force else load_safety_world(cache_dir, seed, size)
            if safety is None:
                safety = build_safety_world(cache_dir, seed, log=lambda m: typer.echo(m, err=True), size=size)
        _print_safety_world(safety)
        return
    from unlearnkit.world.build import build_world, load_world, world_dir

    with cache_lock(world_dir(cache_dir, seed, size).name, cache_dir):
        art = None if force else load_world(cache_dir, seed, size)
        if art is None:
            art = build_world(cache_dir, seed, log=lambda m: typer.echo(m, err=True), size=size)
    _print_world(art)


@world_app.command("info")
@friendly
def world_info(which: str = typer.Argument("tiny", help="tiny | safety."),
               cache_dir: Optional[str] = typer.Option(None, "--cache-dir"), seed: int = typer.Option(0, "--seed"),
               size: str = typer.Option("default", "--size", help="default | small.")):
    """Show a cached world: sizes and how well its models learned (tiny: exact match; safety: harmful rates)."""
    _check_world(which)
    flags = ("" if size == "default" else f" --size {size}") + (f" --seed {seed}" if seed else "") \
        + (f" --cache-dir {cache_dir}" if cache_dir else "")
    if which == "safety":
        from unlearnkit.world.safety_build import load_safety_world, safety_dir

        safety = load_safety_world(cache_dir, seed, size)
        if safety is None:
            raise UnlearnError(f"no safety world is built at {safety_dir(cache_dir, seed, size)};"
                               f" run `unlearn world build safety{flags}`")
        _print_safety_world(safety)
        return
    from unlearnkit.world.build import load_world, world_dir

    art = load_world(cache_dir, seed, size)
    if art is None:
        raise UnlearnError(f"no tiny world is built at {world_dir(cache_dir, seed, size)};"
                           f" run `unlearn world build{flags}`")
    _print_world(art)


def _print_world(art) -> None:
    info = art.info
    typer.echo(f"tiny world at {art.root}")
    typer.echo("rows: " + ", ".join(f"{k} {v}" for k, v in info["sizes"].items()))
    for which in ("target", "retain"):
        m = info[which]
        typer.echo(f"{which:7s} greedy exact match: forget {m['exact_match_forget']:.2f}, retain {m['exact_match_retain']:.2f}"
                   f"  (final loss {m['final_loss']:.3f}, {m['steps']} steps, {m['parameters']:,} parameters)")
    typer.echo(f"built in {info['build_seconds']} s")


def _print_safety_world(art) -> None:
    info = art.info
    typer.echo(f"safety world at {art.root}")
    typer.echo("rows: " + ", ".join(f"{k} {v}" for k, v in info["sizes"].items()))
    typer.echo("keyword-judge harmful rate (greedy); benign requests asked with held-out templates")
    for which in ("compliant", "aligned"):
        m = info[which]
        typer.echo(f"{which:9s} harmful rate: harvest {m['harmful_rate_harvest']:.2f}, probe {m['harmful_rate_probe']:.2f};"
                   f" benign answered {m['benign_answered']:.2f}, ROUGE-L {m['benign_rouge']:.2f};"
                   f" author facts {m['exact_match_authors']:.2f}  ({m['steps']} steps, {m['parameters']:,} parameters)")
    typer.echo(f"models: {art.compliant_dir} and {art.aligned_dir}")
    typer.echo(f"built in {info['build_seconds']} s")


# ------------------------------------------------------- Scenario II crafting and the request inspector


# craft and inspect (Scenario II and the request inspector) live in cli_safety.py; importing it registers them
from unlearnkit import cli_safety  # noqa: E402,F401


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' own per-file progress bars and load reports drown ours; errors still show
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    app()


if __name__ == "__main__":
    main()
