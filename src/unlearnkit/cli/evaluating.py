"""`unlearn eval`: one model on one benchmark (TOFU, the tiny world, WMDP, MMLU), or a recipe's model.

Registered on the app by `unlearnkit.cli`, which imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unlearnkit.cli.app import app, friendly
from unlearnkit.errors import UnlearnError
from unlearnkit.logs import info


# the recipe field behind each flag, so a bad flag value is reported as the flag the user typed
FLAGS = {"data.limit": "--limit", "eval.backend": "--backend", "eval.batch_size": "--batch-size", "eval.max_new_tokens": "--max-new-tokens", "model.dtype": "--dtype",
         "model.device": "--device",
         "model.name": "--model", "data.format": "--format", "data.forget_split": "--forget-split",
         "data.data_dir": "--data-dir", "data.benchmark": "--benchmark", "world.size": "--world-size",
         "eval.retain_model": "--retain-model", "eval.retain_logs": "--retain-logs"}


def _flags_recipe(data: dict):
    """The recipe the flags describe; an invalid value is reported under its flag's name."""
    from unlearnkit.recipe import validate_recipe

    try:
        return validate_recipe(data, "eval options")
    except UnlearnError as err:
        message = str(err).removeprefix("eval options: ").replace("unknown benchmark '", "unknown --benchmark '")
        for field, flag in FLAGS.items():
            message = message.replace(f"field '{field}'", flag).replace(f"e.g. {field}=", f"e.g. {flag} ")
            message = message.replace(f"{field}=", f"{flag} ").replace(field, flag)
        raise UnlearnError(message) from None


@app.command("eval")
@friendly
def eval_cmd(
    overrides: Optional[List[str]] = typer.Argument(None, help="With --recipe: section.field=value overrides."),
    recipe_name: Optional[str] = typer.Option(None, "--recipe", "-r", help="Evaluate a recipe's model on its benchmark"
                                              " (and harmfulness when it measures it), e.g. safety/harmfulness."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Local model dir or hub id; world:target / world:retain."
                                        " With --recipe it replaces the recipe's model.name."),
    benchmark: str = typer.Option("tofu", "--benchmark", "-b", help="tofu | world | muse | wmdp | mmlu (with --data-dir:"
                                  " local files, else the hub: locuslab/TOFU, muse-bench/MUSE-News, cais/wmdp,"
                                  " cais/mmlu; muse: --data-dir world:tiny is the tiny world in MUSE's layout)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory for eval.json and eval.md"
                                       " (required with --model; default with --recipe: its output_dir). A new"
                                       " folder, or one unlearnkit wrote; never a folder holding other files."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Local benchmark folder (else the hub)."),
    forget_split: Optional[str] = typer.Option(None, "--forget-split", help="forget01 | forget05 | forget10 (tofu)."),
    retain_model: Optional[str] = typer.Option(None, "--retain-model", help="Retain model: forget quality (tofu)"
                                               " and privleak's reference (tofu, muse)."),
    retain_logs: Optional[str] = typer.Option(None, "--retain-logs", help="eval.json of a retain-model evaluation."),
    fmt: str = typer.Option("openunlearning", "--format", help="openunlearning (Question:/Answer: tags) | chat | llama2_chat."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    device: str = typer.Option("auto", "--device", help="auto (the GPU when one is visible) | cpu | cuda | cuda:N."),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", help="Generation length for ROUGE."),
    batch_size: int = typer.Option(32, "--batch-size"),
    world_size: str = typer.Option("default", "--world-size", help="Tiny world to evaluate on (world): default | small."),
    backend: str = typer.Option("unlearnkit", "--backend", help="wmdp/mmlu scorer: unlearnkit (built in) | lm_eval"
                                " (lm-evaluation-harness; with --data-dir its registered tasks read the local files)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="wmdp/mmlu: first N items of each subset."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Evaluate one model on a benchmark (TOFU metrics exactly as OpenUnlearning defines them).

    Either --model (and --benchmark ...) or --recipe: `unlearn eval --recipe safety/harmfulness` measures
    the safety world's aligned model's harmful rate on held-out harmful prompts and its benign utility.
    """
    import sys

    if recipe_name is not None:
        from unlearnkit.pipeline import evaluate_recipe
        from unlearnkit.recipe import load_recipe
        from unlearnkit.report import fmt_value as _fmt

        given = {"--benchmark": benchmark != "tofu", "--data-dir": data_dir, "--forget-split": forget_split,
                 "--retain-model": retain_model, "--retain-logs": retain_logs, "--limit": limit,
                 "--backend": backend != "unlearnkit", "--world-size": world_size != "default",
                 "--dtype": dtype != "float32", "--device": device != "auto", "--format": fmt != "openunlearning",
                 "--batch-size": batch_size != 32, "--max-new-tokens": max_new_tokens != 200}
        clash = [flag for flag, set_ in given.items() if set_]
        if clash:
            field = {flag: name for name, flag in FLAGS.items()}.get(clash[0])
            if field is None:
                raise UnlearnError(f"{clash[0]} applies to `unlearn eval --model M -b wmdp|mmlu` only, not with --recipe")
            raise UnlearnError(f"{clash[0]} does not apply with --recipe (the recipe sets it); write it as an override:"
                               f" unlearn eval --recipe {recipe_name} {field}=VALUE")
        extra = [f"model.name={model}"] if model else []  # --model replaces the recipe's model
        result = evaluate_recipe(load_recipe(recipe_name, [*(overrides or []), *extra]), out, progress=not quiet,
                                 log=info, command=sys.argv[1:])
        for key, value in result["metrics"].items():
            typer.echo(f"{key:28s} {_fmt(value)}")
        typer.echo(f"wrote {result['output_dir']}/eval.json and eval.md")
        return
    if model is None or out is None or overrides:
        raise UnlearnError("unlearn eval needs --model and --out (or --recipe RECIPE [overrides]);"
                           " e.g. unlearn eval --model world:target --benchmark world --out runs/eval")
    from unlearnkit.pipeline import evaluate_recipe
    from unlearnkit.pipeline.outputs import check_output_dir
    from unlearnkit.registry import BENCHMARKS
    from unlearnkit.report import fmt_value

    check_output_dir(out)  # before the model is loaded
    data = {"benchmark": benchmark, "format": fmt, "limit": limit}
    if data_dir:
        data["data_dir"] = data_dir
    if forget_split:
        data["forget_split"] = forget_split
    elif benchmark in BENCHMARKS.names():  # the benchmark's own default (TOFU: forget10)
        data["forget_split"] = BENCHMARKS.get(benchmark).eval_forget_split
    recipe = _flags_recipe({"model": {"name": model, "dtype": dtype, "device": device}, "data": data,
                            "eval": {"retain_model": retain_model, "retain_logs": retain_logs, "backend": backend,
                                     "max_new_tokens": max_new_tokens, "batch_size": batch_size},
                            "world": {"size": world_size}})
    result = evaluate_recipe(recipe, out, progress=not quiet, log=info,
                             command=sys.argv[1:])
    for key, value in result["metrics"].items():
        typer.echo(f"{key:28s} {fmt_value(value)}")
    typer.echo(f"wrote {out}/eval.json and eval.md")
