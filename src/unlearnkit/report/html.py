"""report.html: the run on one self-contained page (no network, no external files).

Sections: the before / after / after-attack metrics table (attacks: relearning and quantization, when
the run measured them), the guard's decision, the training loss curves (every logged loss part, from
train_log.jsonl), and a forget-quality-vs-model-utility plot with the starting, unlearned and attacked
models. Plots are PNGs rendered with matplotlib's Agg canvas and embedded as base64 data URIs, so the
file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from unlearnkit.report.table import HEADLINE, fmt_value
from unlearnkit.report.robustness import recovery_curves, robustness_table

STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}.rejected{color:#a00;font-weight:bold}.accepted{color:#070}
img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 7.5, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _line_plot(lines: list[tuple[list, list, dict]], xlabel: str, ylabel: str, size=(7.5, 4.0)) -> str:
    """One axes of lines (x, y, matplotlib keyword arguments), labelled, gridded and with a legend, as a PNG."""
    fig = _figure(*size)
    ax = fig.add_subplot()
    for x, y, style in lines:
        ax.plot(x, y, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def curve_plot(report: dict) -> str | None:
    """Forget metrics against the attacker's fine-tuning steps (relearning with `every` > 0)."""
    curves = recovery_curves(report)
    if not curves:
        return None
    keys = report["robustness"]["metrics"]
    lines = [([p["step"] for p in points], [p.get(key) for p in points],
              {"marker": "o", "color": f"C{i}", "linestyle": ("-", "--", ":")[j % 3],
               "label": f"{key} ({label})" if len(curves) > 1 else key})
             for i, (label, points) in enumerate(curves) for j, key in enumerate(keys)]
    return _line_plot(lines, "relearning step", "forget metric (lower = forgot more)")


def lens_plot(report: dict) -> str | None:
    """The forget answers' probability decoded from every layer (logit lens), before and after unlearning."""
    curves = [(name, ((report.get("per_sample") or {}).get(name) or {}).get("logit_lens")) for name in ("before", "after")]
    curves = [(name, lens) for name, lens in curves if lens and lens.get("forget_logit_lens_by_layer")]
    if not curves:
        return None
    lines = [(lens["layer"], lens["forget_logit_lens_by_layer"], {"marker": "o", "color": f"C{i}", "label": name})
             for i, (name, lens) in enumerate(curves)]
    return _line_plot(lines, "decoder block (its output read through the final norm and lm_head)",
                      "forget answer probability", size=(6.5, 3.6))


def robustness_html(report: dict) -> str:
    table = robustness_table(report)
    if table is None:
        return ""
    header, rows = table
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{'<b>' if r[0].startswith('**') else ''}{html.escape(c.replace('**', ''))}"
                                    f"{'</b>' if r[0].startswith('**') else ''}</td>" for c in r) + "</tr>" for r in rows)
    return f"<h2>Robustness</h2><table><tr>{head}</tr>{body}</table>"


def loss_plot(records: list[dict]) -> str | None:
    keys = sorted({k for r in records for k, v in r.items()
                   if k not in ("step", "lr", "grad_norm") and isinstance(v, (int, float))})
    if not records or not keys:
        return None
    steps = [r["step"] for r in records]
    lines = [(steps, [r.get(key) for r in records], {"label": key, "linewidth": 1.3}) for key in keys]
    return _line_plot(lines, "optimizer step", "loss part")


def tradeoff_plot(report: dict) -> str | None:
    points = [("before", report.get("before")), ("after", report.get("after"))]
    points = [(name, m) for name, m in points if m and m.get("forget_quality") is not None
              and m.get("model_utility") is not None]
    if not any(name == "after" for name, _ in points):  # nothing was unlearned (e.g. the guard stopped it)
        return None
    fig = _figure(6.5, 4.2)
    ax = fig.add_subplot()
    floor = min([m["forget_quality"] for _, m in points if m["forget_quality"] > 0] or [1e-10]) / 10
    for i, (name, m) in enumerate(points):
        ax.scatter([max(m["forget_quality"], floor)], [m["model_utility"]], s=70, color=f"C{i}", label=name, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("forget quality (KS p-value vs retain model; higher = closer to never trained)")
    ax.set_ylabel("model utility")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def render(report: dict, train_log: list[dict] | None = None) -> str:
    """The page as a string."""
    label = report.get("method_label", report.get("method"))
    title = f"unlearnkit report: {label} on {report.get('benchmark')}"
    columns = [("before", report.get("before") or {}), ("after", report.get("after") or {})]
    shown = [(key, name, note) for key, name, note in HEADLINE if any(key in m for _, m in columns)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["metric", *[c for c, _ in columns], "reading"])
    rows = "".join("<tr><td>" + html.escape(name) + "</td>" + "".join(
        f"<td>{html.escape(fmt_value(m.get(key)))}</td>" for _, m in columns) + f"<td>{html.escape(note)}</td></tr>"
        for key, name, note in shown)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>Model <code>{html.escape(str(report.get('model')))}</code>."]
    train = report.get("train")
    if train:
        parts.append(f" Trained {train['steps']} steps, {train['trainable_params']:,} of {train['total_params']:,}"
                     f" parameters ({100 * report.get('trainable_fraction', 0):.2f} %), in {train['seconds']} s.")
    parts.append("</p>")
    if train and train.get("stopped"):
        parts.append(f"<p class='rejected'>Training stopped early (divergence guard): {html.escape(train['stopped'])}</p>")
    guard = report.get("guard")
    if guard:
        css = "accepted" if guard["decision"] == "accepted" else "rejected"
        parts.append(f"<p class='{css}'>Guard: {html.escape(guard['decision'])}"
                     + (f" at the {html.escape(str(guard['stage']))} stage" if guard.get("stage") else "") + "</p>")
        parts += [f"<p>{html.escape(reason)}</p>" for reason in guard.get("reasons", [])]
    parts.append(f"<h2>Metrics</h2><table><tr>{head}</tr>{rows}</table>")
    parts.append(robustness_html(report))
    for heading, image in (("Training losses", loss_plot(train_log or [])),
                           ("Forget quality vs model utility", tradeoff_plot(report)),
                           ("Recovery under relearning", curve_plot(report)),
                           ("Logit lens: the forget answers read from every layer", lens_plot(report))):
        if image:
            parts.append(f"<h2>{heading}</h2><img alt='{heading}' src='{image}'>")
    timings = ", ".join(f"{k} {v}" for k, v in (report.get("timings") or {}).items())
    parts.append(f"<p><small>Timings (s): {html.escape(timings)}</small></p></body></html>")
    return "".join(parts)


def read_train_log(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_html(report: dict, out_dir: str | Path) -> Path:
    from unlearnkit.train.checkpoint import write_text_atomic

    path = Path(out_dir) / "report.html"
    write_text_atomic(path, render(report, read_train_log(out_dir)))
    return path

