"""`unlearn attack`: the robustness suite on any saved model. Registered on the app by `unlearnkit.cli`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from unlearnkit.cli.app import _split_recipe, app, friendly
from unlearnkit.errors import UnlearnError
from unlearnkit.logs import info


@app.command()
@friendly
def attack(
    model: str = typer.Option(..., "--model", "-m", help="The model to attack: a folder `unlearn run` wrote (DIR/model),"
                              " any local Hugging Face model folder or hub id, or world:target / world:retain."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Benchmark and attack settings (default: the"
                                         " tiny world's default recipe); its model.name is the starting model."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Recipe overrides: attacks.relearn.steps=50"
                                                    " attacks.latent=true data.benchmark=tofu ..."),
    only: Optional[str] = typer.Option(None, "--only", help="Run only these attacks, comma-separated"
                                       " (e.g. relearn,quantize,latent); `unlearn ls attacks` lists them."),
    before: Optional[str] = typer.Option(None, "--before", help="The starting model, for the share of forgetting"
                                         " each attack leaves (default: the recipe's model.name, when --model differs)."),
    no_before: bool = typer.Option(False, "--no-before", help="Measure no starting model (the kept columns stay empty)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory for attack.json and attack.md"
                                       " (default: runs/attack). A new folder, or one unlearnkit wrote."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Attack a saved model: relearning, quantization, paraphrase, few-shot, jailbreak templates, direction
    ablation, a latent attack. Prints and writes the robustness table with its worst-case row.

    \b
    unlearn attack --model runs/default/model                      # the cheap defaults on the tiny world
    unlearn attack --model runs/default/model --only latent,relearn attacks.relearn.steps=50
    unlearn attack --model runs/tofu_npo/model -r tofu/npo --only relearn,quantize,jailbreak \\
        --before open-unlearning/tofu_Llama-3.2-1B-Instruct_full
    """
    from unlearnkit.pipeline.attack import attack_model
    from unlearnkit.recipe import load_recipe
    from unlearnkit.registry import ATTACKS, did_you_mean
    from unlearnkit.report.robustness import print_robustness

    if before and no_before:
        raise UnlearnError("--before names the starting model and --no-before measures none; give one of them")
    name, extra = _split_recipe(recipe, overrides)
    chosen: list[str] = []
    if only is not None:
        chosen = [a.strip() for a in only.split(",") if a.strip()]
        for item in chosen:
            if item not in ATTACKS.names():
                raise UnlearnError(f"--only: unknown attack '{item}';{did_you_mean(item, ATTACKS.names())}"
                                   f" valid: {', '.join(ATTACKS.names())}")
        extra = [*extra, *(f"attacks.{a}.enabled={'true' if a in chosen else 'false'}" for a in ATTACKS.names())]
    base = load_recipe(name, extra)
    loaded = load_recipe(name, [*extra, f"model.name={model}"])
    start = None if no_before else (before or (base.model.name if base.model.name != model else None))
    report = attack_model(loaded, out or Path("runs/attack"), before_model=start, progress=not quiet, log=info,
                          command=sys.argv[1:])
    print_robustness(report)
    typer.echo(f"wrote {report['output_dir']}/attack.json and attack.md")


@app.command("meta-eval")
@friendly
def meta_eval(
    recipe: Optional[str] = typer.Argument(None, help="Benchmark and training settings (default: the tiny world)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Recipe overrides, e.g. world.size=small."),
    methods: str = typer.Option("npo,grad_diff,simnpo,rmu", "--methods", help="Unlearning methods whose models"
                                " give the quantization and relearning robustness (comma-separated)."),
    variants: str = typer.Option("5,10", "--variants", help="Steps of retain fine-tuning that make each model's"
                                 " variants (comma-separated; 0 alone: no variants)."),
    positive: Optional[str] = typer.Option(None, "--positive", help="Models that hold the forget knowledge"
                                           " (default: world:target)."),
    negative: Optional[str] = typer.Option(None, "--negative", help="Models that never had it (default: world:retain)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: runs/meta_eval)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Meta-evaluate the forget metrics: faithfulness (AUC separating models that know from models that never
    knew), robustness to 4-bit quantization and to relearning, and their harmonic means; writes meta_eval.{json,md}.

    \b
    unlearn meta-eval                                   # the tiny world: target vs retain, 4 unlearned models
    unlearn meta-eval tofu/npo --positive open-unlearning/tofu_Llama-3.2-1B-Instruct_full \\
        --negative open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90 --methods npo,grad_diff
    """
    from unlearnkit.pipeline.meta_eval import meta_evaluate
    from unlearnkit.recipe import load_recipe
    from unlearnkit.registry import METHODS

    def names(text: str | None) -> list[str] | None:
        return None if text is None else [t.strip() for t in text.split(",") if t.strip()]

    chosen = names(methods) or []
    for method in chosen:
        METHODS.get(method)  # did-you-mean before anything runs
    try:
        steps = sorted({int(v) for v in names(variants) or []} - {0})
    except ValueError:
        raise UnlearnError(f"--variants takes step counts such as 5,10 (got '{variants}')") from None
    if any(s < 0 for s in steps):
        raise UnlearnError(f"--variants takes step counts ≥ 0 (got '{variants}')")
    name, extra = _split_recipe(recipe, overrides)
    result = meta_evaluate(load_recipe(name, extra), out, methods=chosen, variant_steps=steps,
                           positives=names(positive), negatives=names(negative), progress=not quiet, log=info,
                           command=sys.argv[1:])
    from unlearnkit.pipeline.meta_eval import markdown

    typer.echo(markdown(result))
    typer.echo(f"wrote {result['output_dir']}/meta_eval.json and meta_eval.md")
