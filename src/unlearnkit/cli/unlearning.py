"""`unlearn run` and `unlearn compare`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from unlearnkit.cli.app import (EXIT_DIVERGED, EXIT_GUARD_REJECTED, _split_recipe, app,
                                friendly)
from unlearnkit.errors import UnlearnError
from unlearnkit.logs import info


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
    no_eval: bool = typer.Option(False, "--no-eval", help="Only unlearn: no evaluation before or after, no attacks"
                                 " (eval.before=false eval.after=false); the model and the training log are written."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Unlearn with a recipe, evaluate before and after, write DIR/report.{json,md,html} and DIR/model.

    The run writes into DIR.partial and replaces DIR only when it is complete. Ctrl-C stops after the
    current training step and saves a checkpoint there (Ctrl-C twice stops at once); `--resume` continues.
    Set train.save_every=N to also checkpoint every N steps (what survives a killed process).

    \b
    Several GPUs or nodes: accelerate launch --config_file configs/accelerate/ddp.yaml -m unlearnkit.cli run ...
    (also fsdp2.yaml, fsdp2-offload.yaml, deepspeed-zero2.yaml, deepspeed-zero3.yaml; see docs/scale.md).

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
    loaded = load_recipe(name, [*overrides, *(["eval.before=false", "eval.after=false"] if no_eval else [])])
    report = run_pipeline(loaded, out, progress=not quiet, log=info, resume=resume,
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
    from unlearnkit.pipeline.compare import compare as run_compare, parse_method_overrides

    name, overrides = _split_recipe(recipe, overrides)
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    result = run_compare(name, names, overrides, out, progress=not quiet, isolate=not in_process,
                         log=info, method_overrides=parse_method_overrides(sets or []),
                         command=sys.argv[1:])
    typer.echo((Path(result["output_dir"]) / "compare.md").read_text().rstrip())
    typer.echo(f"wrote {result['output_dir']}/compare.json, compare.md, compare.png and runs/")
    if result["failed"]:
        raise UnlearnError(f"{len(result['failed'])} of {len(result['rows'])} methods failed"
                           f" ({', '.join(result['failed'])}); the table above says why")
