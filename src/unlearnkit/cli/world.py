"""`unlearn world build | info`: the bundled tiny and safety worlds."""

from __future__ import annotations

from typing import Optional

import typer

from unlearnkit.cli.app import friendly, world_app
from unlearnkit.errors import UnlearnError
from unlearnkit.logs import info


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
                safety = build_safety_world(cache_dir, seed, log=info, size=size)
        _print_safety_world(safety)
        return
    from unlearnkit.world.build import build_world, load_world, world_dir

    with cache_lock(world_dir(cache_dir, seed, size).name, cache_dir):
        art = None if force else load_world(cache_dir, seed, size)
        if art is None:
            art = build_world(cache_dir, seed, log=info, size=size)
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
