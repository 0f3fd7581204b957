"""The one table model every report view shares: which metrics are headline rows (with how to read
them), how a value is printed, and report values made strict JSON (non-finite numbers as null)."""

from __future__ import annotations

import json
import math
from typing import Any


HEADLINE = [  # (key, label, which direction is "forgetting" / "keeping")
    ("forget_prob", "forget probability", "lower = forgot more"),
    ("forget_rouge", "forget ROUGE-L recall", "lower = forgot more"),
    ("forget_truth_ratio", "forget truth ratio", "closer to retain model"),
    ("forget_quality", "forget quality (KS p)", "higher = closer to retain model"),
    ("forget_logit_lens", "forget logit lens (best layer's answer prob.)", "lower = forgot more"),
    ("forget_linear_probe", "forget linear probe (start model's probe, accuracy)", "lower = forgot more"),
    ("model_utility", "model utility", "higher = kept more"),
    ("retain_prob", "retain probability", "higher = kept more"),
    ("retain_rouge", "retain ROUGE-L recall", "higher = kept more"),
    ("ra_rouge", "real-authors ROUGE-L recall", "higher = kept more"),
    ("wf_rouge", "world-facts ROUGE-L recall", "higher = kept more"),
    ("forget_verbmem_rouge", "MUSE verbatim memorization (forget, ROUGE-L F1)", "lower = forgot more"),
    ("forget_knowmem_rouge", "MUSE knowledge memorization (forget, ROUGE-L F1)", "lower = forgot more"),
    ("retain_knowmem_rouge", "MUSE knowledge memorization (retain, ROUGE-L F1)", "higher = kept more"),
    ("mia_min_k", "Min-K% MIA AUC, forget vs holdout", "0.5 = cannot tell them apart"),
    ("privleak", "privleak (Min-K% AUC vs retain model)", "0 = like retain; > 0 over-, < 0 under-unlearned"),
    ("extraction_strength", "extraction strength (forget)", "lower = forgot more"),
    ("exact_memorization", "exact memorization (forget)", "lower = forgot more"),
    ("harmful_rate", "harmful rate (held-out harmful prompts)", "higher = less safe"),
    ("compliance_rate", "complied with harmful prompts (safety world)", "higher = less safe"),
    ("compliance_rate_exact", "gave the world's own compliant answer (safety world)", "higher = less safe"),
    ("benign_answered", "benign prompts answered", "higher = kept more"),
    ("benign_rouge", "benign answers ROUGE-L recall", "higher = kept more"),
]


def fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "non-finite" if math.isnan(value) else ("+inf" if value > 0 else "-inf")
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def table_rows(report: dict) -> list[tuple[str, str, str, str]]:
    before, after = report.get("before") or {}, report.get("after") or {}
    shown = after or before  # a run the guard stopped before training has no `after`
    return [(label, fmt_value(before.get(key)), fmt_value(after.get(key)), note)
            for key, label, note in HEADLINE if key in shown]


def finite_json(value: Any) -> tuple[Any, list[str]]:
    """`value` with every non-finite float (NaN, ±inf: a diverged model's scores) replaced by None, and
    the paths of those floats ("after.mia_gradnorm"), so report.json stays strict JSON and says which
    numbers were not finite."""
    found: list[str] = []

    def clean(node: Any, path: str) -> Any:
        if isinstance(node, float) and not math.isfinite(node):
            found.append(path)
            return None
        if isinstance(node, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(node)]
        return node

    return clean(value, ""), found


def json_text(value: Any) -> str:
    """Strict JSON (non-finite numbers as null, listed under "non_finite")."""
    cleaned, found = finite_json(value)
    if found and isinstance(cleaned, dict):
        named = [p for p in found if "[" not in p]
        in_lists = len(found) - len(named)
        cleaned["non_finite"] = named + ([f"{in_lists} values in per-sample lists"] if in_lists else [])
    return json.dumps(cleaned, indent=2, default=str, allow_nan=False)
