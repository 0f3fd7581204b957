"""`unlearn meta-eval`: how far each forget metric can be trusted (OpenUnlearning's meta-evaluation protocol,
specs/field-methods.md §3), on a family of models built or named by the command.

* **Faithfulness**: the AUC-ROC of the metric separating models that hold the forget knowledge (positives: the
  starting model and variants of it) from models that never had it (negatives: the retain model and variants),
  oriented so that 1 = it always ranks a knowing model as knowing more. Variants are the model fine-tuned for k
  steps on retain rows (`variant_steps`), which changes the weights without adding or removing forget knowledge.
* **Quantization robustness** Q = 1 − |m(q(u)) − m(u)| / (|m(u)| + |m(q(u))|) for an unlearned model u and its
  4-bit copy q(u) (per-channel RTN, `attacks.quantize`); 1 = unchanged.
* **Relearning robustness** R = 1 − |Δ_unl − Δ_ret| / (|Δ_unl| + |Δ_ret|), Δ the metric's change after one epoch
  of fine-tuning on the forget rows, for u and for the retain model; 1 = the unlearned model relearns exactly
  like a model that never saw the data (its score is not hiding knowledge that comes back faster).
* Q and R are averaged over the unlearned models (`methods`, each run with the recipe's training settings on the
  starting model); robustness = HM(Q, R); overall = HM(faithfulness, robustness). A 0/0 ratio counts as 1.

Metrics: every forget metric the benchmark reports among `ORIENTATION` (forget probability, ROUGE, truth ratio,
extraction strength, exact memorization, the MIAs, the white-box probes when the evaluator has them) and the
forget ROUGE on paraphrased questions. Writes meta_eval.json and meta_eval.md.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Callable

from unlearnkit.logs import info

# +1: higher = the model holds more of the forget knowledge; −1: lower does (TOFU's forget truth ratio is
# mean min(TR, 1/TR), near 1 for a model that cannot tell true from perturbed answers)
ORIENTATION = {"forget_prob": 1, "forget_rouge": 1, "forget_rouge_paraphrased": 1, "forget_truth_ratio": -1,
               "extraction_strength": 1, "exact_memorization": 1, "mia_loss": 1, "mia_zlib": 1, "mia_min_k": 1,
               "mia_min_k_plus_plus": 1, "forget_logit_lens": 1, "forget_linear_probe": 1}


def harmonic(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _ratio_score(x: float, y: float) -> float:
    """1 − |x − y| / (|x| + |y|), 1 when both are 0."""
    total = abs(x) + abs(y)
    return 1.0 if total == 0 else 1.0 - abs(x - y) / total


def quantization_robustness(before: float, after: float) -> float:
    return _ratio_score(before, after)


def relearning_robustness(delta_unlearned: float, delta_retain: float) -> float:
    return _ratio_score(delta_unlearned, delta_retain)


def faithfulness(positives: list[float], negatives: list[float], orientation: int) -> float | None:
    """AUC of `orientation` × value separating positives (label 1) from negatives; None without both kinds."""
    from sklearn.metrics import roc_auc_score

    values = [v for v in positives + negatives if v is not None and math.isfinite(v)]
    if len(values) != len(positives) + len(negatives) or not positives or not negatives:
        return None
    labels = [1] * len(positives) + [0] * len(negatives)
    return float(roc_auc_score(labels, [orientation * v for v in positives + negatives]))


def meta_evaluate(recipe, out_dir: str | os.PathLike | None = None, *, methods: list[str], variant_steps: list[int],
                  positives: list[str] | None = None, negatives: list[str] | None = None, progress: bool = True,
                  log: Callable[[str], None] = info, command: list[str] | None = None) -> dict:
    """The meta-evaluation table (see the module docstring); writes meta_eval.json / .md into `out_dir`."""
    import unlearnkit
    from unlearnkit.attacks.paraphrase import paraphrased_rows
    from unlearnkit.attacks.quantize import quantize_model
    from unlearnkit.attacks.relearn import relearn
    from unlearnkit.benchmarks.base import replace_split
    from unlearnkit.benchmarks.suite import evaluate, load_benchmark
    from unlearnkit.data.formats import get_format
    from unlearnkit.errors import UnlearnError
    from unlearnkit.model import load_model, load_tokenizer
    from unlearnkit.pipeline.outputs import output_dir
    from unlearnkit.pipeline.stages import _model_source
    from unlearnkit.report import json_text
    from unlearnkit.train.checkpoint import write_text_atomic

    fmt = get_format(recipe.data.format, recipe.data.system_prompt)
    out = Path(out_dir or "runs/meta_eval")
    with output_dir(out, "meta-eval", command=command, log=log) as tmp:
        bench = load_benchmark(recipe.data, recipe.world, log=log, progress=progress)
        component = bench.component
        if positives is None or negatives is None:
            if not {"target", "retain"} <= set(component.world_models) or not component.has_world_models(recipe.data):
                raise UnlearnError(f"meta-eval needs models that hold the forget knowledge and models that never had"
                                   f" it; {bench.name} has no bundled pair: give --positive MODEL,... and --negative"
                                   " MODEL,... (e.g. TOFU's full and retain90 models)")
            positives, negatives = positives or ["world:target"], negatives or ["world:retain"]
        metrics = [m for m in ORIENTATION if m in component.known_metrics()]
        paraphrase = component.question_rows and any(r.get("paraphrased_question") for r in bench.splits.forget)
        para_bench = replace_split(bench, "forget", paraphrased_rows(bench.splits.forget)) if paraphrase else None
        tokenizer = load_tokenizer(_model_source(positives[0], bench)[1])

        def scores(model) -> dict[str, float]:
            values = dict(evaluate(model, tokenizer, bench, fmt, recipe.eval, progress=False, metrics=metrics)["metrics"])
            if para_bench is not None:
                para = evaluate(model, tokenizer, para_bench, fmt, recipe.eval, progress=False, metrics=["forget_rouge"])
                values["forget_rouge_paraphrased"] = para["metrics"]["forget_rouge"]
            return values

        def load(name: str):
            return load_model(_model_source(name, bench)[1], dtype=recipe.model.dtype, device=recipe.model.device)

        def variant(model, steps: int):  # fine-tuned on retain rows: weights move, forget knowledge does not
            return relearn(model, tokenizer, bench.train_retain, fmt, n_samples=len(bench.train_retain), steps=steps,
                           lr=recipe.train.lr, batch_size=recipe.train.batch_size, seed=recipe.seed,
                           max_length=recipe.data.max_length)

        family: dict[str, dict] = {}
        for kind, names in (("positive", positives), ("negative", negatives)):
            for name in names:
                base = load(name)
                for steps in [0, *variant_steps]:
                    label = name if steps == 0 else f"{name} + {steps} retain steps"
                    log(f"meta-eval: scoring {label} ({kind})")
                    family[label] = {"kind": kind, "metrics": scores(base if steps == 0 else variant(base, steps))}
        all_metrics = list(next(iter(family.values()))["metrics"])

        start, retain = load(positives[0]), load(negatives[0])
        forget_rows, epoch = bench.train_forget, max(1, math.ceil(len(bench.train_forget) / 4))

        def relearned(model):
            return relearn(model, tokenizer, forget_rows, fmt, n_samples=len(forget_rows), steps=epoch, lr=3e-4,
                           batch_size=4, seed=recipe.seed, max_length=recipe.data.max_length)

        retain_m, retain_rl = family[negatives[0]]["metrics"], scores(relearned(retain))
        unlearned: dict[str, dict] = {}
        for method in methods:
            log(f"meta-eval: unlearning with {method}, then quantizing and relearning it")
            model = unlearnkit.unlearn(copy.deepcopy(start), tokenizer, bench.train_forget, bench.train_retain, method,
                                       format=recipe.data.format, seed=recipe.seed, max_length=recipe.data.max_length,
                                       steps=recipe.train.steps, lr=recipe.train.lr,
                                       batch_size=recipe.train.batch_size, progress=False).model
            unlearned[method] = {"metrics": scores(model), "quantized": scores(quantize_model(model, 4)),
                                 "relearned": scores(relearned(model))}
        table = []
        for m in all_metrics:
            orientation = ORIENTATION[m]
            pos = [v["metrics"].get(m) for v in family.values() if v["kind"] == "positive"]
            neg = [v["metrics"].get(m) for v in family.values() if v["kind"] == "negative"]
            faith = faithfulness(pos, neg, orientation)
            qs = [quantization_robustness(u["metrics"][m], u["quantized"][m]) for u in unlearned.values()]
            rs = [relearning_robustness(u["relearned"][m] - u["metrics"][m], retain_rl[m] - retain_m[m])
                  for u in unlearned.values()]
            q = sum(qs) / len(qs) if qs else None
            r = sum(rs) / len(rs) if rs else None
            robust = harmonic(q, r)
            table.append({"metric": m, "faithfulness": faith, "quantization": q, "relearning": r,
                          "robustness": robust, "overall": harmonic(faith, robust)})
        table.sort(key=lambda row: -(row["overall"] if row["overall"] is not None else -1))
        result = {"benchmark": bench.name, "positives": positives, "negatives": negatives, "methods": methods,
                  "variant_steps": variant_steps, "table": table, "family": family, "unlearned": unlearned,
                  "retain_relearned": retain_rl, "recipe": recipe.resolved()}
        write_text_atomic(tmp / "meta_eval.json", json_text(result))
        write_text_atomic(tmp / "meta_eval.md", markdown(result))
    result["output_dir"] = str(out)
    return result


def markdown(result: dict) -> str:
    from unlearnkit.report import fmt_value

    lines = [f"# unlearnkit meta-evaluation on {result['benchmark']}", "",
             f"Positives (hold the knowledge): {', '.join(result['positives'])}; negatives (never had it):"
             f" {', '.join(result['negatives'])}; each also fine-tuned {result['variant_steps']} steps on retain rows."
             f" Unlearned models for Q and R: {', '.join(result['methods'])}.", "",
             "| metric | faithfulness (AUC) | quantization Q | relearning R | robustness HM(Q, R) | overall |",
             "|---|---|---|---|---|---|"]
    for row in result["table"]:
        lines.append(f"| {row['metric']} | " + " | ".join(fmt_value(row[k]) for k in
                                                          ("faithfulness", "quantization", "relearning", "robustness",
                                                           "overall")) + " |")
    return "\n".join(lines) + "\n"
