"""Run the recipe's `attacks:` on an unlearned model and evaluate each attacked copy.

`pipeline.run` calls `run_attacks` once, after the unlearned model's evaluation and only when a model
was kept (a guard rejection skips it). Every attack works on a copy; the unlearned model is untouched.
The returned sections go into the report:

* ``relearn``: metrics of the relearned copy, the attack's settings, and ``forgetting_kept`` for
  forget_prob and forget_rouge (`attacks.relearn.forgetting_kept`: 1 = all forgetting kept,
  0 = fully recovered, None when unlearning did not lower the metric or `before` was not evaluated);
* ``quantize``: per bit width ("8", "4", ...) the metrics of the rounded copy, ``forgetting_kept`` and
  ``recovery`` (= 1 − forgetting_kept);
* ``paraphrase``: metrics with the forget questions paraphrased (the model is not changed), next to
  the unlearned model's on the original wording.
"""

from __future__ import annotations

from unlearnkit.logs import info

import dataclasses
import copy
import time
from typing import Any, Callable

FORGET_KEYS = ("forget_prob", "forget_rouge", "forget_verbmem_rouge", "forget_knowmem_rouge")  # TOFU-style, MUSE


def forget_keys(metrics: dict | None) -> list[str]:
    """The forget metrics (lower = forgot more) that `metrics` has, in FORGET_KEYS order."""
    return [key for key in FORGET_KEYS if key in (metrics or {})]


def check_attacks(recipe, bench) -> None:
    """Refuse, before any training, an attack the benchmark cannot run."""
    from unlearnkit.errors import UnlearnError

    if recipe.attacks.paraphrase and not bench.component.question_rows:
        raise UnlearnError(f"attacks.paraphrase rewrites forget questions; {bench.name} has none: set"
                           " attacks.paraphrase=false (relearn and quantize work here)")


def relearn_enabled(recipe, bench) -> bool:
    enabled = recipe.attacks.relearn.enabled
    return bench.component.relearn_by_default if enabled is None else enabled


def _kept(before: dict | None, after: dict, attacked: dict) -> dict[str, float | None]:
    from unlearnkit.attacks.relearn import forgetting_kept

    return {key: forgetting_kept(before, after, attacked, key) for key in forget_keys(after)}


def _with_forget(bench, rows):
    """`bench` whose evaluation forget split is `rows` (the splits object is copied, not changed)."""
    splits = bench.splits
    if dataclasses.is_dataclass(splits):
        splits = dataclasses.replace(splits, forget=rows)
    else:
        splits = copy.copy(splits)
        splits.forget = rows
    return dataclasses.replace(bench, splits=splits)


def run_attacks(recipe, model, tokenizer, bench, fmt, evaluate_fn: Callable[[Any, Any], dict], *,
                before: dict | None, after: dict, progress: bool = False,
                log: Callable[[str], None] = info) -> dict:
    """{"relearn": ..., "quantize": ..., "paraphrase": ...} for the attacks the recipe enables.

    `evaluate_fn(model, bench) -> {"metrics": ...}` is the pipeline's evaluation; `before` and `after`
    are the metrics of the starting and the unlearned model (before may be None)."""
    cfg = recipe.attacks
    out: dict[str, Any] = {}
    if relearn_enabled(recipe, bench):
        from unlearnkit.attacks.relearn import relearn

        rl = cfg.relearn
        log(f"relearning attack: fine-tuning a copy on {rl.n_samples} forget samples for {rl.steps} steps")
        started = time.perf_counter()
        attacked = relearn(model, tokenizer, bench.train_forget, fmt, n_samples=rl.n_samples, steps=rl.steps,
                           lr=rl.lr, batch_size=rl.batch_size, seed=recipe.seed, max_length=recipe.data.max_length,
                           train_edits=rl.train_edits, progress=progress)
        train_seconds = time.perf_counter() - started
        metrics = evaluate_fn(attacked, bench)["metrics"]
        del attacked
        out["relearn"] = {"metrics": metrics, "settings": {**rl.model_dump(), "enabled": True, "seed": recipe.seed,
                                                       "samples_used": min(rl.n_samples, len(bench.train_forget))},
                          "forgetting_kept": _kept(before, after, metrics),
                          "seconds": round(time.perf_counter() - started, 2), "train_seconds": round(train_seconds, 2)}
    if cfg.quantize.bits:
        from unlearnkit.attacks.quantize import quantize_model

        out["quantize"] = {}
        for bits in cfg.quantize.bits:
            log(f"quantization probe: {bits}-bit weights")
            quantized = quantize_model(model, bits, include_embeddings=cfg.quantize.include_embeddings,
                                       include_edits=cfg.quantize.include_edits)
            metrics = evaluate_fn(quantized, bench)["metrics"]
            del quantized
            kept = _kept(before, after, metrics)
            out["quantize"][str(bits)] = {"metrics": metrics, "forgetting_kept": kept,
                                          "recovery": {k: None if v is None else 1.0 - v for k, v in kept.items()}}
    if cfg.paraphrase:
        from unlearnkit.attacks.paraphrase import paraphrased_rows

        log("paraphrase probe: the forget questions in other words")
        metrics = evaluate_fn(model, _with_forget(bench, paraphrased_rows(bench.splits.forget)))["metrics"]
        forget = {k: v for k, v in metrics.items() if k.startswith("forget_")}
        out["paraphrase"] = {"metrics": forget, "original": {k: after.get(k) for k in forget}}
    return out
