"""The robustness table every report view shows (report.md, the terminal, report.html): rows = attacks, columns =
the benchmark's forget metrics and the share of forgetting each attack left, then the worst-case row."""

from __future__ import annotations

from typing import Any

from unlearnkit.report.table import HEADLINE, fmt_value


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def robustness_table(report: dict) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows) of the report's robustness section, or None when no attack ran."""
    section = report.get("robustness")
    if not section or not section.get("rows"):
        return None
    keys = section["metrics"]
    labels = {key: label for key, label, _ in HEADLINE}
    header = ["attack", *(labels.get(k, k) for k in keys), *(f"kept ({k})" for k in keys)]
    rows = [["none (unlearned model)", *(fmt_value(section["unlearned"].get(k)) for k in keys), *["100%"] * len(keys)]]
    for row in section["rows"]:
        rows.append([row["label"], *(fmt_value(row["metrics"].get(k)) for k in keys),
                     *(_pct(row["forgetting_kept"].get(k)) for k in keys)])
    worst = section["worst_case"]
    rows.append(["**worst case**", *(fmt_value(worst["metrics"].get(k)) for k in keys),
                 *(_pct(worst["forgetting_kept"].get(k)) for k in keys)])
    return header, rows


def robustness_lines(report: dict) -> list[str]:
    """The robustness section of report.md."""
    table = robustness_table(report)
    if table is None:
        return []
    header, rows = table
    worst = report["robustness"]["worst_case"]["attack"]
    lines = ["", "Robustness: each attack works on a copy, on rewritten questions or through hooks it removes; the"
             " forget metrics are re-measured. *kept* = share of the unlearning effect that survives (100% = nothing"
             " recovered, 0% = back to the starting model). The worst case takes, per metric, the most knowledge"
             " any attack (or none) recovered.", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines += ["", "Worst case from: " + "; ".join(f"{k}: {v}" for k, v in worst.items()) + "."]
    return lines


def print_robustness(report: dict) -> None:
    """The robustness table in the terminal (nothing when no attack ran)."""
    table = robustness_table(report)
    if table is None:
        return
    from rich.console import Console
    from rich.table import Table

    header, rows = table
    n = len(report["robustness"]["metrics"])
    keep = list(range(1 + n + 1))  # compact for a terminal: the metrics and the first metric's kept share
    view = Table(title="robustness (lower forget metrics = forgot more; kept = share of forgetting left;"
                       " report.md has every column)")
    for i in keep:
        view.add_column(header[i], min_width=12 if i == 0 else None)
    for cells in rows:
        label = "worst-case" if cells[0].startswith("**") else cells[0]
        view.add_row(label, *[cells[i] for i in keep[1:]], style="bold" if cells[0].startswith("**") else None)
    Console().print(view)


def recovery_curves(report: dict) -> list[tuple[str, list[dict]]]:
    """(label, [{step, metric: value}]) of every attack row with a curve (relearning with `every` > 0)."""
    section = report.get("robustness") or {}
    return [(row["label"], row["curve"]) for row in section.get("rows", []) if row.get("curve")]
