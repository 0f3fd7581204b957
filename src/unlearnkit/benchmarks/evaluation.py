"""Evaluation entry points: which data a benchmark uses, and cached reference evaluations.

`load_benchmark` turns the recipe's `data:` section into evaluation splits (TOFU schema) and
training rows, for the bundled tiny world, the tiny aligned safety world (its fictitious-author
facts; harmfulness is measured by `safety_probe`), TOFU (hub `locuslab/TOFU` or a local folder), or
MUSE (hub `muse-bench/MUSE-News|Books`, a local folder, or `world:tiny`: the tiny world in MUSE's layout;
raw texts to train on, `benchmarks.muse` splits to evaluate).

Forget quality needs the *retain model's* per-sample forget truth ratios. They come from
`eval.retain_logs` (a JSON written by an earlier evaluation), or from evaluating
`eval.retain_model` once and caching the result; for the tiny world the retain model is part of
the world. The starting model's own evaluation on the tiny world is cached the same way, so a
repeated `unlearn run` only evaluates the unlearned model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from unlearnkit.train.checkpoint import write_text_atomic
from unlearnkit.errors import UnlearnError

WORLD_MUSE = "world:tiny"  # data.data_dir for data.benchmark=muse: the tiny world in MUSE's layout
EVAL_VERSION = "2"  # bump when metric code changes, to invalidate cached evaluations


@dataclass
class BenchmarkData:
    name: str
    splits: Any  # .forget .retain .real_authors .world_facts (.holdout): TOFU-schema rows
    train_forget: list[dict]
    train_retain: list[dict]
    world: Any = None  # WorldArtifacts for the tiny world


def load_benchmark(data_cfg, world_cfg, log: Callable[[str], None] = print, progress: bool = True) -> BenchmarkData:
    if data_cfg.benchmark == "world":
        from unlearnkit.world.build import ensure_world

        if data_cfg.forget_split != "forget":
            raise UnlearnError(f"the tiny world has one forget split, 'forget' (got '{data_cfg.forget_split}');"
                               " remove data.forget_split or set data.benchmark=tofu")
        art = ensure_world(world_cfg.cache_dir, world_cfg.seed, progress=progress, log=log, size=world_cfg.size)
        return BenchmarkData("world", art.world, art.world.forget, art.world.retain, art)
    if data_cfg.benchmark == "safety":
        from unlearnkit.world.safety_build import ensure_safety_world

        if data_cfg.forget_split != "forget":
            raise UnlearnError(f"the safety world has one benign forget split, 'forget' (got '{data_cfg.forget_split}')")
        art = ensure_safety_world(world_cfg.cache_dir, world_cfg.seed, progress=progress, log=log, size=world_cfg.size)
        authors = art.world.authors  # its fictitious-author facts, in TOFU's schema
        return BenchmarkData("safety", authors, authors.forget, authors.retain, art)
    if data_cfg.benchmark == "muse":
        from unlearnkit.benchmarks.muse import load_muse, load_muse_raw

        if data_cfg.forget_split != "forget":
            raise UnlearnError(f"MUSE unlearns its raw 'forget' split (got data.forget_split='{data_cfg.forget_split}');"
                               " remove data.forget_split")
        art, data_dir = None, data_cfg.data_dir
        if data_dir == WORLD_MUSE:  # the tiny world in MUSE's layout (offline); world:target / world:retain work
            from unlearnkit.world.build import ensure_world
            from unlearnkit.world.muse_view import ensure_muse_view

            art = ensure_world(world_cfg.cache_dir, world_cfg.seed, progress=progress, log=log, size=world_cfg.size)
            data_dir = ensure_muse_view(art, log)
        raw = load_muse_raw(data_cfg.muse_corpus, data_dir, ("forget", "retain1"))
        return BenchmarkData("muse", load_muse(data_cfg.muse_corpus, data_dir),
                             [{"text": t} for t in raw["forget"]], [{"text": t} for t in raw["retain1"]], art)
    from unlearnkit.data.tofu import load_tofu

    splits = load_tofu(data_cfg.forget_split, data_cfg.data_dir)
    return BenchmarkData("tofu", splits, splits.forget, splits.retain_train or splits.retain)


def request_rows(bench: BenchmarkData, name: str, data_cfg) -> list[dict]:
    """The forget rows of one unlearning request (`data.sequential`).

    World: ``forget`` (every forget author) or ``forget_<k>`` (the k-th forget author, from 1).
    TOFU: a forget split, e.g. ``forget01`` then ``forget05``.
    """
    if bench.name in ("world", "safety"):
        authors: dict[str, list[dict]] = {}
        for row in bench.train_forget:
            authors.setdefault(row.get("author", ""), []).append(row)
        groups = list(authors.values())
        valid = ["forget", *(f"forget_{k + 1}" for k in range(len(groups)))]
        if name == "forget":
            return list(bench.train_forget)
        if name in valid:
            return groups[int(name.split("_")[1]) - 1]
        raise UnlearnError(f"unknown forget request '{name}' for the tiny world; valid: {', '.join(valid)}")
    if bench.name == "muse":
        raise UnlearnError("data.sequential is not available for MUSE yet (its sust/forget_1..4 splits are not"
                           " loaded); run one request per recipe, starting each from the previous run's model")
    from unlearnkit.data.tofu import FORGET_SPLITS, load_split

    if name not in FORGET_SPLITS:
        raise UnlearnError(f"unknown forget request '{name}' for tofu; valid: {', '.join(FORGET_SPLITS)}")
    return load_split(name, data_cfg.data_dir)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([EVAL_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:16]


def privacy_enabled(bench: BenchmarkData, eval_cfg) -> bool:
    if bench.name == "muse":  # privleak on MUSE's own privleak/{forget, holdout} texts
        holdout = bench.splits.privleak and {"forget", "holdout"} <= set(bench.splits.privleak)
        if eval_cfg.privacy and not holdout:
            raise UnlearnError("eval.privacy on MUSE needs privleak/forget.json and privleak/holdout.json in"
                               " data.data_dir (or the hub's privleak config)")
        return bool(holdout) if eval_cfg.privacy is None else eval_cfg.privacy
    holdout = getattr(bench.splits, "holdout", None)
    if eval_cfg.privacy is None:
        return bool(holdout)
    if eval_cfg.privacy and not holdout:
        raise UnlearnError("eval.privacy needs a holdout split (never-trained rows) to compare the forget set"
                           " with; this benchmark has none (TOFU: a local folder without holdoutNN files)")
    return eval_cfg.privacy


def evaluate_model(model, tokenizer, bench: BenchmarkData, fmt, eval_cfg, retain_truth_ratios=None,
                   progress: bool = True, reference=None) -> dict:
    """Run the TOFU suite (metrics + per-sample values) on `bench`'s splits, plus the privacy suite
    (MIA AUCs forget vs holdout, privleak, memorization) when enabled, through ONE `Evaluator`: a
    sequence both suites score (the forget answers) runs once. `reference`:
    `(reference_model or None, retain model's mia_min_k AUC or None)`."""
    if bench.name == "muse":
        return _evaluate_muse(model, tokenizer, bench, fmt, eval_cfg, progress, reference)
    from unlearnkit.benchmarks.evaluator import Evaluator
    from unlearnkit.benchmarks.tofu import plan_tofu

    reference_model, retain_auc = reference or (None, None)
    ev = Evaluator(model, tokenizer, batch_size=eval_cfg.batch_size, progress=progress,
                   reference_model=reference_model)
    finish_tofu = plan_tofu(ev, bench.splits, fmt, max_new_tokens=eval_cfg.max_new_tokens,
                            retain_truth_ratios=retain_truth_ratios)
    finish_privacy = None
    if privacy_enabled(bench, eval_cfg):
        from unlearnkit.benchmarks.privacy import plan_privacy

        finish_privacy = plan_privacy(ev, list(bench.splits.forget), list(bench.splits.holdout), fmt,
                                      retain_min_k_auc=retain_auc)
    ev.run()
    result = finish_tofu().to_dict()
    if finish_privacy is not None:
        privacy = finish_privacy()
        result["per_sample"]["privacy"] = privacy.pop("per_sample")
        result["privleak_reference"] = privacy.pop("privleak_reference")
        result["metrics"].update(privacy)
    result["passes"] = {"sequences": dict(ev.counts), "seconds": {k: round(v, 3) for k, v in ev.seconds.items()}}
    return result


def _evaluate_muse(model, tokenizer, bench: BenchmarkData, fmt, eval_cfg, progress: bool, reference) -> dict:
    """MUSE's metrics (verbmem / knowmem ROUGE-L F1) and, when enabled, Min-K% AUC and privleak on its
    privleak texts against the retain model's AUC (`reference[1]`; privleak is None without one)."""
    from unlearnkit.benchmarks.muse import muse_suite
    from unlearnkit.benchmarks.privacy import muse_privleak

    retain_auc = (reference or (None, None))[1]
    privacy_fn = muse_privleak(retain_auc) if privacy_enabled(bench, eval_cfg) else None
    result = muse_suite(model, tokenizer, bench.splits, fmt=fmt, batch_size=eval_cfg.batch_size,
                        privacy_fn=privacy_fn, progress=progress).to_dict()
    if privacy_fn is not None:
        from unlearnkit.benchmarks.privacy import privleak_reference

        result["privleak_reference"] = privleak_reference(retain_auc)
    return result


def privacy_reference(bench: BenchmarkData, recipe, fmt, progress: bool = True):
    """(reference model, retain model's Min-K% AUC) for the reference attack and privleak: the retain
    model (the tiny world's own, or eval.retain_model); (None, None) without one."""
    from unlearnkit.model import load_model

    if not privacy_enabled(bench, recipe.eval):
        return None, None
    if bench.name == "world" and not recipe.eval.retain_model:
        retain = world_model_eval(bench, "retain", recipe.data.format, fmt, recipe.model.device, recipe.eval, progress)
        return (load_model(str(bench.world.model_dir("retain")), device=recipe.model.device),
                retain["metrics"].get("mia_min_k"))
    if not recipe.eval.retain_model:
        return None, None
    name = recipe.eval.retain_model
    if name.startswith("world:") and bench.world is not None:
        name = str(bench.world.model_dir(name.split(":", 1)[1]))
    from unlearnkit.benchmarks.privacy import privacy_metrics, text_min_k_auc
    from unlearnkit.model import load_tokenizer

    def load():
        return load_model(name, dtype=recipe.model.dtype, trust_remote_code=recipe.model.trust_remote_code,
                          device=recipe.model.device)

    if bench.name == "muse":  # only the AUC is needed (no reference attack on raw texts): cached by content
        texts = bench.splits.privleak
        key = _key("privacy-muse", name, texts["forget"], texts["holdout"])
        retain = _cached(cache_root_of(recipe) / "retain_evals" / f"{key}.json", lambda: {
            "metrics": {"mia_min_k": text_min_k_auc(load(), load_tokenizer(name), list(texts["forget"]),
                                                    list(texts["holdout"]))}})
        return None, retain["metrics"]["mia_min_k"]
    model = load()
    key = _key("privacy", name, bench.name, recipe.data.forget_split, recipe.data.format)
    retain = _cached(cache_root_of(recipe) / "retain_evals" / f"{key}.json", lambda: {
        "metrics": {k: v for k, v in privacy_metrics(model, load_tokenizer(name), list(bench.splits.forget),
                                                     list(bench.splits.holdout), fmt).items() if k != "per_sample"}})
    return model, retain["metrics"].get("mia_min_k")


def cache_root_of(recipe) -> Path:
    from unlearnkit.world.build import cache_root

    return cache_root(recipe.world.cache_dir)


def _cached(path: Path, compute: Callable[[], dict]) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    write_text_atomic(path, json.dumps(value))
    return value


def world_model_eval(bench: BenchmarkData, which: str, fmt_name: str, fmt, device: str, eval_cfg, progress=True,
                     retain_truth_ratios=None, reference=None) -> dict:
    """Evaluation of the world's target or retain model (on `device`), computed once per settings and cached."""
    from unlearnkit.model import load_model, load_tokenizer

    art = bench.world
    key = _key(which, fmt_name, getattr(fmt, "system", ""), eval_cfg.max_new_tokens, retain_truth_ratios is not None,
               privacy_enabled(bench, eval_cfg), reference is not None)

    def compute() -> dict:
        path = str(art.model_dir(which))
        return evaluate_model(load_model(path, device=device), load_tokenizer(path), bench, fmt, eval_cfg,
                              retain_truth_ratios, progress, reference)

    return _cached(art.root / "evals" / f"{which}-{key}.json", compute)


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


def retain_truth_ratios(bench: BenchmarkData, recipe, fmt, cache_root: Path, progress=True) -> list[float] | None:
    """The retain model's forget truth ratios for forget quality (None when there is no retain model)."""
    if bench.name == "muse":  # no truth ratios: MUSE's retain model is only privleak's reference
        if recipe.eval.retain_logs:
            raise UnlearnError("eval.retain_logs holds TOFU truth ratios; MUSE has none: give eval.retain_model"
                               " (e.g. muse-bench/MUSE-News_retrain) for privleak's reference instead")
        return None
    if recipe.eval.retain_logs:
        return truth_ratios_from_logs(recipe.eval.retain_logs)
    if bench.name == "world" and not recipe.eval.retain_model:
        return world_model_eval(bench, "retain", recipe.data.format, fmt, recipe.model.device, recipe.eval,
                                progress)["forget_truth_ratios"]
    if not recipe.eval.retain_model:
        return None
    from unlearnkit.model import load_model, load_tokenizer

    name = recipe.eval.retain_model
    if name.startswith("world:"):
        if bench.world is None:
            raise UnlearnError(f"eval.retain_model '{name}' is a tiny-world model; it needs data.benchmark=world")
        name = str(bench.world.model_dir(name.split(":", 1)[1]))
    key = _key(name, bench.name, recipe.data.forget_split, recipe.data.format, recipe.eval.max_new_tokens)

    def compute() -> dict:
        model = load_model(name, dtype=recipe.model.dtype, trust_remote_code=recipe.model.trust_remote_code,
                           device=recipe.model.device)
        return evaluate_model(model, load_tokenizer(name), bench, fmt, recipe.eval, None, progress)

    return _cached(cache_root / "retain_evals" / f"{key}.json", compute)["forget_truth_ratios"]
