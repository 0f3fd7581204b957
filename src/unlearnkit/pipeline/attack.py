"""`unlearn attack`: the robustness suite on any saved model (ours, or any Hugging Face causal LM).

The recipe says the benchmark and the attack settings; its `model.name` is the model to attack (`--model`
replaces it). When a starting model is given (`before_model`; by default the recipe's own model when `--model`
replaced it, e.g. world:target), its forget metrics are measured too, so every row also says how much of the
unlearning effect survives (`forgetting_kept`). Writes attack.json (everything) and attack.md (the table).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from unlearnkit.logs import info
from unlearnkit.recipe import Recipe


def attack_model(recipe: Recipe, out_dir: str | os.PathLike | None = None, *, before_model: str | None = None,
                 progress: bool = True, log: Callable[[str], None] = info, command: list[str] | None = None) -> dict:
    """Run the recipe's enabled attacks on its model; returns the result written to attack.json."""
    from unlearnkit.attacks.robustness import check_attacks, enabled_attacks, run_attacks
    from unlearnkit.benchmarks.suite import load_benchmark
    from unlearnkit.data.formats import get_format
    from unlearnkit.errors import UnlearnError
    from unlearnkit.manifest import build_manifest, recording_reads
    from unlearnkit.model import load_model
    from unlearnkit.pipeline.outputs import output_dir
    from unlearnkit.pipeline.stages import _load_start_model, _model_source, forget_measure
    from unlearnkit.report import json_text
    from unlearnkit.report.robustness import robustness_lines
    from unlearnkit.train.checkpoint import write_text_atomic

    fmt = get_format(recipe.data.format, recipe.data.system_prompt)
    out = Path(out_dir or recipe.output_dir)
    with output_dir(out, "attack", command=command, log=log) as tmp, recording_reads() as reads:
        bench = load_benchmark(recipe.data, recipe.world, log=log, progress=progress)
        if not enabled_attacks(recipe, bench):
            raise UnlearnError(f"no attack is enabled for {bench.name}; enable some, e.g. --only relearn,quantize or"
                               " attacks.relearn=true (`unlearn ls attacks` lists them)")
        check_attacks(recipe, bench)
        model, tokenizer = _load_start_model(recipe, bench)
        measure = forget_measure(tokenizer, fmt, recipe.eval)
        log(f"measuring {recipe.model.name} on {bench.name}")
        after = measure(model, bench)
        before, models = None, {"model": _model_source(recipe.model.name, bench)}
        if before_model:
            models["before_model"] = _model_source(before_model, bench)
            log(f"measuring the starting model {before_model}")
            start = load_model(models["before_model"][1], dtype=recipe.model.dtype, device=recipe.model.device)
            before = measure(start, bench)
            del start
        result = run_attacks(recipe, model, tokenizer, bench, fmt, measure, before=before, after=after,
                             progress=progress, log=log)
        report = {"model": recipe.model.name, "benchmark": bench.name, "before_model": before_model,
                  "before": before, "after": after, **result, "recipe": recipe.resolved(),
                  "manifest": build_manifest(recipe, models, reads, model)}
        write_text_atomic(tmp / "attack.json", json_text(report))
        title = f"# unlearnkit attack: {recipe.model.name} on {bench.name}"
        started = f"Starting model: `{before_model}`." if before_model else "No starting model: *kept* is empty."
        write_text_atomic(tmp / "attack.md", "\n".join([title, "", started, *robustness_lines(report), ""]))
    report["output_dir"] = str(out)
    return report
