"""Reports: report.json (everything), report.md (before/after table), report.html (the page with plots,
`report.html`), and the same table in the terminal, all from the table model in `report.table`."""

from __future__ import annotations

from pathlib import Path

from unlearnkit.report.html import write_html
from unlearnkit.report.robustness import print_robustness, robustness_lines  # noqa: F401  (public here)
from unlearnkit.report.table import HEADLINE, fmt_value, json_text, table_rows  # noqa: F401  (public here)
from unlearnkit.train.checkpoint import write_text_atomic

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
    reference = report.get("privleak_reference")
    if reference:
        lines += ["", f"privleak is against a Min-K% AUC of {fmt_value(reference['auc'])}: {reference['source']}."]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings"].items()), ""]
    return "\n".join(lines)


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
    write_html(report, out_dir)  # the same run as one self-contained page, plots embedded


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    if not (report.get("before") or report.get("after")):
        Console().print("not evaluated (eval.before and eval.after are off)")
        return
    table = Table(title=f"{report.get('method_label', report['method'])} on {report['benchmark']}")
    for column in ("metric", "before", "after", "reading"):
        table.add_column(column)
    for row in table_rows(report):
        table.add_row(*row)
    Console().print(table)
    print_robustness(report)
