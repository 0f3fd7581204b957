"""One evaluation path for every benchmark and command, and the reference evaluations it needs.

* `load_benchmark(data_cfg, world_cfg)`: the recipe's benchmark (`registry.BENCHMARKS`) and its data.
* `evaluate(model, tokenizer, data, fmt, eval_cfg, ...)`: one `Evaluator`, the benchmark's plan for the
  selected metrics (`eval.metrics`, default all), one run of the distinct passes, the metrics. `unlearn run`
  (before and after), `unlearn eval`, checkpoint selection and the attacks all go through it.
* The linear probe (`white_box`) is fitted on the first model evaluated with the data; `world_model_eval`
  fits it on the world's model when its evaluation comes from the cache, so `unlearn run` on a world fits it
  on the starting model either way.
* References: forget quality needs the retain model's forget truth ratios, privleak its Min-K% AUC. They
  come from `eval.retain_logs`, or from evaluating `eval.retain_model` (or the bundled world's retain model)
  for just those numbers, cached. Every cache key is content: SHA-256 of the model's weight files (remembered
  per file, `cache.file_digest`), of the rows evaluated, the prompt format, the metric set, the generation
  settings and unlearnkit's version — never a name alone, so a model retrained at the same path is evaluated
  again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from unlearnkit.benchmarks.base import BenchmarkData
from unlearnkit.errors import UnlearnError
from unlearnkit.train.checkpoint import write_text_atomic
from unlearnkit.logs import info
from unlearnkit.manifest import model_files, rows_digest

EVAL_VERSION = "4"  # bump when metric code changes, to invalidate cached evaluations


def load_benchmark(data_cfg, world_cfg, log: Callable[[str], None] = info, progress: bool = True) -> BenchmarkData:
    from unlearnkit.registry import BENCHMARKS

    return BENCHMARKS.build(data_cfg.benchmark).load(data_cfg, world_cfg, log=log, progress=progress)


def evaluate(model, tokenizer, data: BenchmarkData, fmt, eval_cfg, *, retain_truth_ratios=None, reference=None,
             progress: bool = True, metrics: list[str] | None = None) -> dict:
    """The benchmark's metrics of `model` (`metrics`, else `eval.metrics`, else all of them), from one planned
    set of passes. `reference`: ``(reference model or None, retain model's Min-K% AUC or None)``."""
    from unlearnkit.benchmarks.evaluator import Evaluator

    component = data.component
    reference_model, retain_auc = reference or (None, None)
    ev = Evaluator(model, tokenizer, batch_size=eval_cfg.batch_size, max_tokens=eval_cfg.max_tokens_per_batch,
                   progress=progress, reference_model=reference_model)
    wanted = component.resolve_metrics(metrics if metrics is not None else eval_cfg.metrics)
    finish = component.plan(ev, data, fmt, eval_cfg, retain_truth_ratios=retain_truth_ratios, retain_auc=retain_auc,
                            metrics=wanted)
    ev.run()
    result = finish()
    result["passes"] = {"sequences": dict(ev.counts), "seconds": {k: round(v, 3) for k, v in ev.seconds.items()}}
    return result


# ------------------------------------------------------------------------------------- content keys


def content_key(*parts: Any) -> str:
    from unlearnkit.manifest import package_versions

    payload = [EVAL_VERSION, package_versions().get("unlearnkit"), *parts]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def model_digest(name_or_dir: str, revision: str | None = None) -> str:
    """The SHA-256 digests of a model's weight files (a local folder or the hub cache), as one key part."""
    files = model_files(name_or_dir, revision).get("files")
    return json.dumps(files, sort_keys=True) if files else f"unhashed:{name_or_dir}@{revision}"


def _cached(path: Path, compute: Callable[[], dict]) -> dict:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:  # a damaged cache file is computed again
            pass
    value = compute()
    from unlearnkit.report.table import json_text

    write_text_atomic(path, json_text(value))
    return value


def _splits_digest(data: BenchmarkData) -> str:
    splits = data.splits
    fields = getattr(splits, "__dict__", None) or (splits if isinstance(splits, dict) else {"splits": str(splits)})
    return rows_digest({k: v for k, v in fields.items() if isinstance(v, (list, dict, str, type(None)))})


def _retain_dir(recipe, data: BenchmarkData) -> str | None:
    """The retain model's folder or hub id: eval.retain_model, else the bundled world's retain model."""
    name = recipe.eval.retain_model
    if name is None:
        return str(data.component.world_model_dir(data, "retain")) if "retain" in data.component.world_models \
            and data.world is not None else None
    if name.startswith("world:"):
        return str(data.component.world_model_dir(data, name.split(":", 1)[1]))
    return name


def cache_root_of(recipe) -> Path:
    from unlearnkit.cache import cache_root

    return cache_root(recipe.world.cache_dir)


def _reference_eval(recipe, data: BenchmarkData, fmt, progress: bool, name: str, metric: str) -> dict:
    """The retain model's `metric` evaluation on this data (only the passes it needs), cached by content."""
    from unlearnkit.model import load_model, load_tokenizer

    key = content_key("reference", metric, model_digest(name), _splits_digest(data), data.name, recipe.data.format,
                      recipe.data.system_prompt, recipe.model.dtype)

    def compute() -> dict:
        model = load_model(name, dtype=recipe.model.dtype, trust_remote_code=recipe.model.trust_remote_code,
                           device=recipe.model.device)
        result = evaluate(model, load_tokenizer(name), data, fmt, recipe.eval, progress=progress, metrics=[metric])
        return {"metrics": result["metrics"], "forget_truth_ratios": result.get("forget_truth_ratios")}

    return _cached(cache_root_of(recipe) / "retain_evals" / f"{key}.json", compute)


def retain_truth_ratios(data: BenchmarkData, recipe, fmt, progress: bool = True) -> list[float] | None:
    """The retain model's forget truth ratios for forget quality (None when there is no retain model)."""
    if not data.component.truth_ratios:
        return None
    if recipe.eval.retain_logs:
        return truth_ratios_from_logs(recipe.eval.retain_logs)
    name = _retain_dir(recipe, data)
    if name is None:
        return None
    return _reference_eval(recipe, data, fmt, progress, name, "forget_truth_ratio")["forget_truth_ratios"]


def privacy_reference(data: BenchmarkData, recipe, fmt, progress: bool = True):
    """(reference model, retain model's Min-K% AUC) for the reference attack and privleak: the retain model
    (eval.retain_model, or the bundled world's); (None, None) without one (privleak then uses 0.5)."""
    from unlearnkit.model import load_model

    if not data.component.privacy_enabled(data, recipe.eval):
        return None, None
    name = _retain_dir(recipe, data)
    if name is None:
        return None, None
    auc = _reference_eval(recipe, data, fmt, progress, name, "mia_min_k")["metrics"].get("mia_min_k")
    if not data.component.question_rows:  # raw texts: no reference attack, the AUC alone
        return None, auc
    model = load_model(name, dtype=recipe.model.dtype, trust_remote_code=recipe.model.trust_remote_code,
                       device=recipe.model.device)
    return model, auc


def world_model_eval(data: BenchmarkData, which: str, recipe, fmt, progress=True, retain_truth_ratios=None,
                     reference=None) -> dict:
    """Evaluation of a bundled world's own model (e.g. the starting world:target), cached by content."""
    from unlearnkit.model import load_model, load_tokenizer

    path = str(data.component.world_model_dir(data, which))
    key = content_key("world-model", which, model_digest(path), _splits_digest(data), recipe.data.format,
                      recipe.data.system_prompt, recipe.eval.max_new_tokens, recipe.eval.metrics,
                      data.component.privacy_enabled(data, recipe.eval), rows_digest(retain_truth_ratios),
                      reference[1] if reference else None)

    def compute() -> dict:
        return evaluate(load_model(path, device=recipe.model.device), load_tokenizer(path), data, fmt, recipe.eval,
                        retain_truth_ratios=retain_truth_ratios, reference=reference, progress=progress)

    result = _cached(data.world.root / "evals" / f"{which}-{key}.json", compute)
    wanted = data.component.resolve_metrics(recipe.eval.metrics)
    wanted = data.component.metric_names(data, recipe.eval) if wanted is None else wanted
    if "forget_linear_probe" in wanted and not data.probes:  # a cached evaluation: the probe is fitted on this model
        from unlearnkit.benchmarks.white_box import fit_forget_probe

        fit_forget_probe(load_model(path, device=recipe.model.device), load_tokenizer(path), data, fmt, recipe.eval)
    return result


def truth_ratios_from_logs(path: str | Path) -> list[float]:
    """Forget truth ratios from a JSON written by `unlearn eval` / `unlearn run` (or any JSON with
    a top-level `forget_truth_ratios` list)."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"eval.retain_logs: {path} does not exist; give the eval.json of a retain-model evaluation")
    from unlearnkit.data.files import read_text

    try:
        data = json.loads(read_text(path, "eval.retain_logs file"))
    except json.JSONDecodeError as err:
        raise UnlearnError(f"eval.retain_logs: {path} is not valid JSON ({err})") from None
    for candidate in (data, data.get("after", {}) if isinstance(data, dict) else {}):
        if isinstance(candidate, dict) and isinstance(candidate.get("forget_truth_ratios"), list):
            try:
                return [float(x) for x in candidate["forget_truth_ratios"]]
            except (TypeError, ValueError):
                raise UnlearnError(f"eval.retain_logs: {path}: forget_truth_ratios must be a list of numbers"
                                   " (a null is a non-finite ratio of a diverged model); evaluate the retain model"
                                   " again") from None
    raise UnlearnError(f"eval.retain_logs: {path} has no 'forget_truth_ratios' list; write it with "
                       "`unlearn eval --model RETAIN_MODEL --out DIR` and pass DIR/eval.json")
