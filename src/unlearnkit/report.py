"""Reports: report.json (everything), report.md (before/after table), and the same table in the terminal."""

from __future__ import annotations

import json
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
]


def fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def table_rows(report: dict) -> list[tuple[str, str, str, str]]:
    before, after = report.get("before") or {}, report.get("after") or {}
    return [(label, fmt_value(before.get(key)), fmt_value(after.get(key)), note)
            for key, label, note in HEADLINE if key in after]


def markdown(report: dict) -> str:
    lines = [f"# unlearnkit report: {report.get('method_label', report['method'])} on {report['benchmark']}", "",
             f"Model: `{report['model']}`. Trained {report['train']['steps']} steps "
             f"({report['train']['trainable_params']:,} of {report['train']['total_params']:,} parameters,"
             f" {100 * report['trainable_fraction']:.2f}%) in {report['train']['seconds']} s.", ""]
    if report["train"].get("stopped"):
        lines += [f"**Training stopped early:** {report['train']['stopped']}", ""]
    if report.get("stages"):  # sequential requests
        lines += ["Requests, unlearned one after the other:", ""]
        for i, stage in enumerate(report["stages"], 1):
            after = stage.get("after") or report["after"]
            lines.append(f"{i}. `{stage['request']}`: {stage['forget_examples']} forget examples, {stage['steps']} steps"
                         f" → forget probability {fmt_value(after.get('forget_prob'))},"
                         f" model utility {fmt_value(after.get('model_utility'))}")
        lines.append("")
    lines += ["| metric | before | after | reading |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in table_rows(report)]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings"].items()), ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2, default=str))
    write_text_atomic(out_dir / "report.md", markdown(report))


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.get('method_label', report['method'])} on {report['benchmark']}")
    for column in ("metric", "before", "after", "reading"):
        table.add_column(column)
    for row in table_rows(report):
        table.add_row(*row)
    Console().print(table)
