"""Run the recipe's enabled attacks on an unlearned model and build the robustness table.

`pipeline.run` calls `run_attacks` once, after the unlearned model's evaluation and only when a model was kept
(a guard rejection skips it); `unlearn attack` calls it on any saved model. Every attack works on a copy, on
rewritten questions, or through hooks it removes (`attacks.base`); the model it is given is never changed.

The result is the report's ``robustness`` section:

* ``metrics``: the columns, the benchmark's forget metrics (lower = forgot more; `Benchmark.forget_metrics`);
* ``unlearned``: their values on the unlearned model without attack (`after`);
* ``rows``: one per attack row: ``attack`` (registered name), ``label``, ``metrics``, ``forgetting_kept`` per
  metric (`relearn.forgetting_kept`: 1 = the attack recovered nothing, 0 = back to the starting model, None
  without `before` or when unlearning did not lower the metric), ``settings``, ``seconds``, and ``curve`` for
  relearning with ``every > 0``;
* ``worst_case``: per metric, the highest value over the attacks and the unlearned model itself (an adversary
  may also not attack), which attack gave it, and the forgetting kept there. A method is judged by this row.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from unlearnkit.attacks.base import AttackTarget
from unlearnkit.logs import info


def forget_keys(metrics: dict | None, bench=None) -> list[str]:
    """The forget metrics (lower = forgot more) that `metrics` has: the benchmark's, or every known one."""
    from unlearnkit.registry import BENCHMARKS

    names = (bench.component.forget_metrics if bench is not None else
             dict.fromkeys(m for b in BENCHMARKS.names() for m in BENCHMARKS.get(b).forget_metrics))
    return [key for key in names if key in (metrics or {})]


def enabled_attacks(recipe, bench) -> list:
    return [a for a in recipe.build_attacks() if a.is_on(bench)]


def check_attacks(recipe, bench) -> None:
    """Refuse, before any training, an enabled attack the benchmark cannot run."""
    for attack in enabled_attacks(recipe, bench):
        attack.check(bench)


def kept(before: dict | None, after: dict, attacked: dict, keys: list[str]) -> dict[str, float | None]:
    from unlearnkit.attacks.relearn import forgetting_kept

    return {key: forgetting_kept(before, after, attacked, key) for key in keys}


def worst_case(after: dict, rows: list[dict], keys: list[str], before: dict | None) -> dict[str, Any]:
    """Per metric, the largest value (most knowledge recovered) over `rows` and the unlearned model."""
    out: dict[str, Any] = {"metrics": {}, "attack": {}, "forgetting_kept": {}}
    for key in keys:
        candidates = [("none (unlearned model)", after.get(key))] + [(r["label"], r["metrics"].get(key)) for r in rows]
        candidates = [(label, value) for label, value in candidates if value is not None]
        if not candidates:
            continue
        label, value = max(candidates, key=lambda item: item[1])
        out["metrics"][key], out["attack"][key] = value, label
        out["forgetting_kept"][key] = kept(before, after, {key: value}, [key])[key]
    return out


def run_attacks(recipe, model, tokenizer, bench, fmt, measure: Callable[[Any, Any], dict], *,
                before: dict | None, after: dict, progress: bool = False,
                log: Callable[[str], None] = info) -> dict:
    """{"robustness": the table} for the attacks the recipe enables on this benchmark ({} when none is).

    `measure(model, bench) -> metrics` re-measures the benchmark's forget metrics; `before` and `after` are the
    starting and the unlearned model's metrics (before may be None)."""
    attacks = enabled_attacks(recipe, bench)
    if not attacks:
        return {}
    keys = forget_keys(after, bench) or list(bench.component.forget_metrics)
    target = AttackTarget(model, tokenizer, bench, fmt, measure, seed=recipe.seed, max_length=recipe.data.max_length,
                          progress=progress, log=log)
    rows: list[dict] = []
    for attack in attacks:
        started = time.perf_counter()
        results = attack.run(target)
        seconds = round((time.perf_counter() - started) / max(len(results), 1), 2)
        for result in results:
            metrics = {k: result.metrics.get(k) for k in keys}
            row = {"attack": attack.name, "label": result.label, "metrics": metrics,
                   "forgetting_kept": kept(before, after, metrics, keys), "settings": result.settings,
                   "seconds": seconds}
            if result.curve:
                row["curve"] = [{"step": p["step"], **{k: p.get(k) for k in keys}} for p in result.curve]
            rows.append(row)
    return {"robustness": {"metrics": keys, "unlearned": {k: after.get(k) for k in keys}, "rows": rows,
                           "worst_case": worst_case(after, rows, keys, before)}}
