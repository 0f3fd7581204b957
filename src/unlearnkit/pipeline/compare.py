"""`unlearn compare`: several unlearning methods on the same world, one table and one plot.

Each method runs as base recipe + `method.name=<m>` + the overrides for every method + its own
(`--set npo:method.beta=0.2`, or `overrides:` in a compare recipe); every method's recipe is
validated before anything runs. By default each method runs in a fresh `python -m unlearnkit.cli
run` process, so the peak memory its report records (`resources.peak_rss_mb`, `peak_accelerator_mb`
on CUDA) is its own. `isolate=False` runs them one after another in this process (for tests and
quick looks): peak RSS is then the process's running maximum (the table says so); the CUDA peak is
reset before each method. A failing method does not stop the others: its row holds the error line
(details in logs/<m>.log). runs/<m>/ (each report and model), compare.json, compare.md and
compare.png are written into a temporary sibling of the output directory, renamed into place at the end.

A compare recipe (recipes/compare/world.yaml)::

    recipe: default                        # the run recipe every method starts from
    methods: [grad_ascent, npo, simnpo]     # or: all (every registered method)
    overrides: {npo: [method.beta=0.2]}    # optional, per method
    output_dir: runs/compare
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unlearnkit.errors import UnlearnError
from unlearnkit.recipe import Recipe, _read_yaml, find_recipe, list_recipes, load_recipe
from unlearnkit.registry import METHODS, did_you_mean
from unlearnkit.report import fmt_value as _fmt
from unlearnkit.logs import info

DEFAULT_OUT = "runs/compare"


class CompareRecipe(BaseModel):
    """The schema of a compare recipe; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    recipe: str = "default"
    methods: list[str] | Literal["all"] = Field(min_length=1)  # "all": every registered method, in registry order
    overrides: dict[str, list[str]] = Field(default_factory=dict)
    output_dir: str = DEFAULT_OUT


def _find(name: str) -> Path:
    try:
        return find_recipe(name)
    except UnlearnError:
        known = list_recipes() + list_recipes(compare=True)
        raise UnlearnError(f"recipe '{name}' not found;{did_you_mean(name, known)} run recipes (with --methods):"
                           f" {', '.join(list_recipes())}; compare recipes: {', '.join(list_recipes(compare=True))}"
                           "; or give a path to a .yaml file") from None


def load_compare_recipe(path: Path) -> CompareRecipe:
    """Validate a compare recipe; its `recipe:` may be a path relative to the compare recipe's folder."""
    try:
        spec = CompareRecipe.model_validate(_read_yaml(path))
    except ValidationError as err:
        errors = err.errors()  # a misspelt key also makes the right one "missing": name the misspelling
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "missing":
            raise UnlearnError(f"{path}: a compare recipe needs '{where}' (e.g. methods: [npo, grad_ascent])") from None
        if first["type"] == "extra_forbidden":
            valid = list(CompareRecipe.model_fields)
            raise UnlearnError(f"{path}: unknown field '{where}';{did_you_mean(where, valid)}"
                               f" valid fields: {', '.join(valid)}") from None
        raise UnlearnError(f"{path}: field '{where}' {first['msg'].lower()} (got {first.get('input')!r})") from None
    if (path.parent / spec.recipe).is_file():
        spec.recipe = str(path.parent / spec.recipe)
    return spec


def parse_method_overrides(items: list[str]) -> dict[str, list[str]]:
    """['npo:method.beta=0.2', ...] -> {'npo': ['method.beta=0.2']}."""
    out: dict[str, list[str]] = {}
    for item in items:
        method, sep, override = item.partition(":")
        if not sep or "=" not in override or "=" in method:
            raise UnlearnError(f"--set '{item}' must look like METHOD:section.field=value (e.g. npo:method.beta=0.2)")
        out.setdefault(method.strip(), []).append(override.strip())
    return out


def plan(recipe_name: str | None, methods: list[str] | None, overrides: list[str] = (),
         method_overrides: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Resolve and validate everything before running anything: {base, methods: {m: (overrides, Recipe)}, ...}."""
    recipe_name = recipe_name or ("default" if methods else "compare/world")
    path = _find(recipe_name)
    data = _read_yaml(path)
    per_method: dict[str, list[str]] = {}
    out_dir, known = DEFAULT_OUT, None
    if {"methods", "recipe"} & set(data):  # a compare recipe (neither key is a run-recipe field)
        spec = load_compare_recipe(path)
        base_name, out_dir, per_method = spec.recipe, spec.output_dir, {k: list(v) for k, v in spec.overrides.items()}
        base = str(_find(base_name).resolve())
        known = METHODS.names() if spec.methods == "all" else list(spec.methods)
        unknown = [m for m in per_method if m not in known]
        if unknown:
            raise UnlearnError(f"{path}: overrides for '{unknown[0]}', which is not in methods: {', '.join(known)}")
        methods = methods or known
    elif not methods:
        raise UnlearnError(f"'{recipe_name}' is a run recipe; name the methods to compare, e.g."
                           f" `unlearn compare {recipe_name} --methods npo,grad_ascent`")
    else:
        base_name, base = recipe_name, str(path.resolve())
    if len(set(methods)) != len(methods):
        raise UnlearnError(f"--methods lists {sorted({m for m in methods if methods.count(m) > 1})[0]} twice;"
                           " each method runs once")
    for method in methods:
        try:
            METHODS.get(method)  # unknown -> did-you-mean error, before anything runs
        except UnlearnError as err:
            raise UnlearnError(f"{'--methods' if methods is not known else recipe_name}: {err}") from None
    for method, items in (method_overrides or {}).items():
        if method not in methods:
            raise UnlearnError(f"--set names method '{method}', which is not compared;{did_you_mean(method, methods)}"
                               f" compared: {', '.join(methods)}")
        per_method.setdefault(method, []).extend(items)
    if any(o.split("=", 1)[0].strip() == "method.name" for o in overrides):
        raise UnlearnError("method.name cannot be overridden in a comparison; list the methods with --methods")
    runs = {}
    for method in methods:
        run_overrides = [f"method.name={method}", *overrides, *per_method.get(method, [])]
        try:
            runs[method] = (run_overrides, load_recipe(base, run_overrides))
        except UnlearnError as err:
            raise UnlearnError(f"{method}: {err}") from None
    return {"recipe": recipe_name, "base_name": base_name, "base": base, "output_dir": out_dir,
            "overrides": list(overrides), "method_overrides": {m: per_method[m] for m in methods if m in per_method},
            "runs": runs}


def _run_isolated(base: str, overrides: list[str], run_dir: Path, log_file: Path, progress: bool) -> dict:
    """`unlearn run` in a fresh process; returns its report (raises UnlearnError with its error line)."""
    cmd = [sys.executable, "-m", "unlearnkit.cli", "run", base, *overrides, "--out", str(run_dir)]
    cmd += [] if progress else ["--quiet"]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while chunk := proc.stdout.read1(4096):  # type: ignore[union-attr]
            fh.write(chunk)
            if progress:
                sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()
        code = proc.wait()
    # 0 done; 3 the guard rejected, 4 training diverged: both wrote their report, which the table shows
    if code in (0, 3, 4) and (run_dir / "report.json").is_file():
        return json.loads((run_dir / "report.json").read_text())
    lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error: ", "internal error: "))]
    if errors:
        raise UnlearnError(errors[-1].removeprefix("error: "))
    last = f": {lines[-1]}" if lines else ""
    raise UnlearnError(f"killed by signal {-code} (out of memory?)" if code < 0 else f"exit status {code}{last}")


def _run_in_process(recipe: Recipe, run_dir: Path, log_file: Path, progress: bool, log) -> dict:
    from unlearnkit.pipeline import run as run_pipeline

    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.reset_peak_memory_stats()
    try:
        return run_pipeline(recipe, run_dir, progress=progress, log=log)
    except UnlearnError:
        raise
    except Exception as err:  # a bug in one method must not lose the other rows; the traceback is kept
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(traceback.format_exc())
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UnlearnError(f"internal error: {type(err).__name__}: {first} (traceback in {log_file.name})") from None


def _relearn_kept(report: dict) -> float | None:
    """forget_prob's forgetting kept under the relearning attack."""
    rows = (report.get("robustness") or {}).get("rows", [])
    return next((r["forgetting_kept"].get("forget_prob") for r in rows if r["attack"] == "relearn"), None)


def _worst(report: dict, part: str) -> float | None:
    """The worst-case row's forget_prob (part "metrics") or its forgetting kept (part "forgetting_kept")."""
    return (((report.get("robustness") or {}).get("worst_case") or {}).get(part) or {}).get("forget_prob")


def _row(method: str, wall: float, report: dict | None = None, error: str | None = None) -> dict:
    """One table row; a failed method has the same keys, with None for what it did not produce."""
    rep = report or {}
    before, after, res, train = (rep.get(k) or {} for k in ("before", "after", "resources", "train"))
    return {"method": method, "label": rep.get("method_label") or method, "status": "failed" if error else "ok",
            "error": error,
            "forget_prob_before": before.get("forget_prob"), "forget_prob_after": after.get("forget_prob"),
            "forget_quality": after.get("forget_quality"), "model_utility": after.get("model_utility"),
            "forgetting_kept": _relearn_kept(rep), "worst_forget_prob": _worst(rep, "metrics"),
            "worst_kept": _worst(rep, "forgetting_kept"),
            "trainable_params": rep.get("trainable_params"), "trainable_fraction": rep.get("trainable_fraction"),
            "wall_s": round(wall, 2), "unlearn_s": (rep.get("timings") or {}).get("unlearn"),
            "peak_rss_mb": res.get("peak_rss_mb"), "peak_accelerator_mb": res.get("peak_accelerator_mb"),
            "steps": train.get("steps"), "stopped": train.get("stopped"),
            "run_dir": f"runs/{method}" if report else None, "after": after or None}


def compare(recipe_name: str | None, methods: list[str] | None = None, overrides: list[str] = (),
            out_dir: str | os.PathLike | None = None, progress: bool = True, log: Callable[[str], None] = info,
            isolate: bool = True, method_overrides: dict[str, list[str]] | None = None,
            command: list[str] | None = None) -> dict:
    """Run `methods` on `recipe_name` (a run recipe; or a compare recipe, whose methods are the default)
    and write compare.json, compare.md and compare.png into `out_dir`; returns the comparison.
    Failed methods are listed in result['failed'] (and have an `error`); nothing is raised for them."""
    from unlearnkit.manifest import package_versions, source_commit
    from unlearnkit.pipeline.outputs import output_dir
    from unlearnkit.report import json_text
    from unlearnkit.secrets import redact_config

    planned = plan(recipe_name, methods, list(overrides), method_overrides)
    out = Path(out_dir or planned["output_dir"])
    rows, start = [], None
    names = list(planned["runs"])
    with output_dir(out, "compare", command=command, log=log) as tmp:
        for i, (method, (run_overrides, recipe)) in enumerate(planned["runs"].items(), 1):
            log(f"[{i}/{len(names)}] {method}: unlearn run {planned['base_name']} {' '.join(run_overrides)}")
            run_dir, log_file, clock = tmp / "runs" / method, tmp / "logs" / f"{method}.log", time.perf_counter()
            try:
                report = (_run_isolated(planned["base"], run_overrides, run_dir, log_file, progress) if isolate
                          else _run_in_process(recipe, run_dir, log_file, progress, log))
            except UnlearnError as err:
                rows.append(_row(method, time.perf_counter() - clock, error=str(err).strip().splitlines()[0]))
                log(f"[{i}/{len(names)}] {method}: failed: {rows[-1]['error']}")
                continue
            rows.append(_row(method, time.perf_counter() - clock, report))
            start = start or report.get("before")
            log(f"[{i}/{len(names)}] {method}: done in {rows[-1]['wall_s']} s")
        result = {"recipe": planned["recipe"], "base_recipe": planned["base_name"],
                  "overrides": redact_config(planned["overrides"]),
                  "method_overrides": redact_config(planned["method_overrides"]), "isolated": isolate,
                  "memory": ("peak_rss_mb: each method's own process" if isolate else
                             "peak_rss_mb: running maximum of one process (in-process comparison)"),
                  "start": start, "rows": rows, "failed": [r["method"] for r in rows if r["status"] != "ok"],
                  "manifest": {"packages": package_versions(), "unlearnkit_source": source_commit(),
                               "runs": "each run's report.json has its own manifest (devices, seeds, input digests)"}}
        (tmp / "compare.json").write_text(json_text(result))
        (tmp / "compare.md").write_text(markdown(result))
        plot(result, tmp / "compare.png")
    result["output_dir"] = str(out)
    return result


def markdown(result: dict) -> str:
    """The comparison table (also what `unlearn compare` prints)."""
    rows, start = result["rows"], result["start"] or {}
    gpu, failed = any(r["peak_accelerator_mb"] is not None for r in rows), bool(result["failed"])
    head = ["method", "forget prob (before → after)", "forget quality", "model utility", "forgetting kept (relearn)",
            "worst-case forget prob", "worst-case kept", "trainable params", "wall s",
            "peak RSS MB" if result["isolated"] else "peak RSS MB (running max)"] + ["peak GPU MB"] * gpu + ["error"] * failed
    table = [head, ["---"] * len(head)]
    if start:
        table.append(["starting model", *(_fmt(start.get(k)) for k in ("forget_prob", "forget_quality", "model_utility")),
                      *["—"] * (6 + gpu), *[""] * failed])
    for r in rows:
        if r["status"] == "ok":
            label = (r.get("label") or r["method"]) + (" (training stopped early)" if r.get("stopped") else "")
            table.append([label, f"{_fmt(r['forget_prob_before'])} → {_fmt(r['forget_prob_after'])}",
                          _fmt(r["forget_quality"]), _fmt(r["model_utility"]), _fmt(r["forgetting_kept"]),
                          _fmt(r["worst_forget_prob"]), _fmt(r["worst_kept"]),
                          f"{r['trainable_params']:,} ({100 * r['trainable_fraction']:.3g}%)", _fmt(r["wall_s"]),
                          _fmt(r["peak_rss_mb"]), *[_fmt(r["peak_accelerator_mb"])] * gpu, *[""] * failed])
        else:
            table.append([r["method"], "failed", *["—"] * (len(head) - 3), r["error"].replace("|", "\\|")])
    lines = ["| " + " | ".join(cells) + " |" for cells in table]
    extra = " ".join(result["overrides"])
    notes = [f"# unlearnkit comparison: {result['recipe']}", "",
             f"Each method ran `unlearn run {result['base_recipe']} method.name=<method>{' ' + extra if extra else ''}`"
             + "".join(f"; {m} also {' '.join(o)}" for m, o in result["method_overrides"].items()) + ".", "",
             *lines, "",
             "forget quality: KS-test p-value against the retain model (higher = closer to never having learned"
             " the forget set); model utility: higher = kept more; forgetting kept: the share of the drop in forget_prob"
             " that survives the relearning attack (1 = all of it, 0 = back to the start; empty when the run had no"
             " relearning attack); worst case: the highest forget probability over every attack the run made (and none),"
             " and the forgetting kept there. Wall time: the whole run, loading and evaluation included.",
             ("Peak memory: each method ran in its own process, so each peak is that method's own." if result["isolated"]
              else "Peak memory: all methods ran in one process; peak RSS is the process's running maximum so far,"
                   " not a per-method figure (run without --in-process for per-method peaks)."), ""]
    if result["failed"]:
        notes.append(f"Failed: {', '.join(result['failed'])} (logs/<method>.log has the details).\n")
    return "\n".join(notes)


def plot(result: dict, path: Path) -> None:
    """Forget quality (log x) against model utility: one marker per method (named in the legend), the start as a star."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [((r.get("label") or r["method"]), r["forget_quality"], r["model_utility"]) for r in result["rows"]
              if r["status"] == "ok" and r["forget_quality"] is not None and r["model_utility"] is not None]
    start = result["start"] or {}
    if start.get("forget_quality") is not None and start.get("model_utility") is not None:
        points.append(("starting model", start["forget_quality"], start["model_utility"]))
    fig = Figure(figsize=(9, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positive = [fq for _, fq, _ in points if fq > 0]
    floor = min(positive) / 10 if positive else 1e-10  # p-values of exactly 0 are drawn at the floor
    markers = "osD^vP<>Xhp"
    for i, (name, fq, mu) in enumerate(points):
        is_start = name == "starting model"
        label = name if fq > 0 else f"{name} (p=0)"
        ax.scatter([max(fq, floor)], [mu], marker="*" if is_start else markers[i % len(markers)],
                   s=180 if is_start else 60, color="black" if is_start else f"C{i % 10}", zorder=3, label=label,
                   edgecolors="white", linewidths=0.5)
    if points:
        ax.set_xscale("log")
        ax.margins(0.1)
        # a legend beside the axes: labels next to points overlap when methods land close together
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no forget quality to plot (no method finished, or no retain model)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("forget quality (KS p-value vs retain model, log scale; higher is better)")
    ax.set_ylabel("model utility (higher is better)")
    ax.set_title(f"unlearnkit comparison: {result['recipe']}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
