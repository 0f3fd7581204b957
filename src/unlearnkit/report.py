"""Reports: report.json (everything), report.md (before/after table), report.html (the page with plots,
`report_html`), and the same table in the terminal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from unlearnkit.checkpoint import write_text_atomic

HEADLINE = [  # (key, label, which direction is "forgetting" / "keeping")
    ("forget_prob", "forget probability", "lower = forgot more"),
    ("forget_rouge", "forget ROUGE-L recall", "lower = forgot more"),
    ("forget_truth_ratio", "forget truth ratio", "closer to retain model"),
    ("forget_quality", "forget quality (KS p)", "higher = closer to retain model"),
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


def markdown(report: dict) -> str:
    lines = [f"# unlearnkit report: {report.get('method_label', report['method'])} on {report['benchmark']}", ""]
    train = report.get("train")
    if train:
        lines += [f"Model: `{report['model']}`. Trained {train['steps']} steps ({train['trainable_params']:,} of"
                  f" {train['total_params']:,} parameters, {100 * report['trainable_fraction']:.2f}%)"
                  f" in {train['seconds']} s.", ""]
        if train.get("stopped"):
            lines += [f"**Training stopped early:** {train['stopped']}", ""]
    else:
        lines += [f"Model: `{report['model']}`. Not trained.", ""]
    guard = report.get("guard")
    if guard:
        verdict = "**Guard: accepted.**" if guard["decision"] == "accepted" else \
            f"**Guard: rejected at the {guard['stage']} stage; no model was written — keep serving the starting model.**"
        lines += [verdict, *[f"- {reason}" for reason in guard["reasons"]], ""]
    attack = report.get("attack")
    if attack:
        lines += [f"Attack (Scenario I): {attack['refusals_kept']} of {attack['harvest_prompts']} responses to harmful"
                  " prompts were judged safe (refusals); they are the forget set, as bare text.", ""]
    if report.get("safety"):
        sd = report["safety"]
        decoding = ", ".join(f"{k} {v}" for k, v in sd["decoding"].items())
        lines += [f"Harmfulness: judge `{sd['judge'].get('name')}`, {sd['n_probe']} held-out harmful prompts"
                  f" ({sd['probe']}); decoding: {decoding}.", ""]
    if report.get("stages"):  # sequential requests
        lines += ["Requests, unlearned one after the other:", ""]
        for i, stage in enumerate(report["stages"], 1):
            after = stage.get("after") or report["after"] or {}
            lines.append(f"{i}. `{stage['request']}`: {stage['forget_examples']} forget examples, {stage['steps']} steps"
                         f" → forget probability {fmt_value(after.get('forget_prob'))},"
                         f" model utility {fmt_value(after.get('model_utility'))}")
        lines.append("")
    lines += ["| metric | before | after | reading |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in table_rows(report)]
    lines += robustness_lines(report)
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings"].items()), ""]
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def robustness_lines(report: dict) -> list[str]:
    """The attacks section of report.md: forget metrics of each attacked copy and the share of the
    unlearning effect it kept (1 = all forgetting kept, 0 = fully recovered)."""
    relearn, quantize, paraphrase = report.get("relearn"), report.get("quantize"), report.get("paraphrase")
    if not (relearn or quantize or paraphrase):
        return []
    from unlearnkit.attacks.robustness import forget_keys

    after = report.get("after") or {}
    keys = forget_keys(after)[:2]  # TOFU-style: probability and ROUGE; MUSE: verbmem and knowmem
    labels = {key: label for key, label, _ in HEADLINE}
    lines = ["", "Robustness (attacks on a copy of the unlearned model; *kept* = share of the unlearning effect"
             " that survives: 100% = nothing recovered, 0% = back to the starting model):", "",
             "| model | " + " | ".join(labels[k] for k in keys) + " | " + " | ".join(f"kept ({k})" for k in keys) + " |",
             "|---|" + "---|" * (2 * len(keys)),
             "| unlearned | " + " | ".join(fmt_value(after.get(k)) for k in keys) + " |" + " |" * len(keys)]

    def row(label: str, section: dict) -> str:
        m, kept = section["metrics"], section.get("forgetting_kept") or {}
        return (f"| {label} | " + " | ".join(fmt_value(m.get(k)) for k in keys) + " | "
                + " | ".join(_pct(kept.get(k)) for k in keys) + " |")

    if relearn:
        s = relearn["settings"]
        lines.append(row(f"relearned ({s.get('samples_used', s['n_samples'])} forget samples, {s['steps']} steps, lr {s['lr']:g})", relearn))
    for bits, section in (quantize or {}).items():
        lines.append(row(f"{bits}-bit weights (RTN, per channel)", section))
    if paraphrase:
        lines.append(row("paraphrased forget questions", paraphrase))
    return lines


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


def write_eval(result: dict, out_dir: str | Path, title: str, lines: list[str] | None = None) -> None:
    """eval.json (everything) and eval.md (`lines`, by default the metric table) of `unlearn eval`."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "eval.json", json_text(result))
    if lines is None:
        lines = ["| metric | value |", "|---|---|"] + [f"| {k} | {fmt_value(v)} |" for k, v in result["metrics"].items()]
    write_text_atomic(out_dir / "eval.md", f"# {title}\n\n" + "\n".join(lines) + "\n")


def write_report(report: dict, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "report.json", json_text(report))
    write_text_atomic(out_dir / "report.md", markdown(report))
    from unlearnkit.report_html import write_html

    write_html(report, out_dir)  # the same run as one self-contained page, plots embedded


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.get('method_label', report['method'])} on {report['benchmark']}")
    for column in ("metric", "before", "after", "reading"):
        table.add_column(column)
    for row in table_rows(report):
        table.add_row(*row)
    Console().print(table)
