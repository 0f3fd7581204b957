"""WMDP and MMLU as registered benchmarks: zero-shot multiple-choice accuracy (`wmdp`), for evaluation only.

They have no forget set of their own: `unlearn eval -b wmdp` (or `--recipe` with ``data.benchmark: wmdp``)
measures a model, e.g. after RMU. ``data.subsets`` picks WMDP's subsets (default bio and cyber) or MMLU's
subjects (default every subject); ``data.data_dir`` reads local files instead of the hub; ``data.limit``
keeps the first N items of each. ``eval.backend: lm_eval`` scores the same items through
lm-evaluation-harness's own task configs (`harness`) instead of the Evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearnkit.benchmarks.base import Benchmark, BenchmarkData
from unlearnkit.benchmarks.wmdp import WMDP_SUBSETS, load_mmlu, load_wmdp, plan_multiple_choice
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import BENCHMARKS
from unlearnkit.logs import info


class MultipleChoice(Benchmark):
    """Shared by WMDP and MMLU: items {question, choices, answer} per subset; accuracy from option log-likelihoods.

    A subclass loads its items in ``_load(data_cfg) -> {subset: rows}`` and names its lm-eval tasks."""

    aliases: ClassVar[dict[str, str]] = {"acc": "accuracy", "acc_norm": "accuracy_norm"}
    forget_splits = ("forget",)
    unlearnable = False
    question_rows = False
    truth_ratios = False
    forget_metrics = ("accuracy",)  # WMDP: lower = forgot more (chance 0.25); MMLU sets () (knowledge to keep)
    lm_eval_tasks: ClassVar[tuple[str, ...]] = ()

    def topic(self, subset: str) -> str:
        return subset

    def load(self, data_cfg, world_cfg, log=info, progress=True) -> BenchmarkData:
        return BenchmarkData(self.name, self._load(data_cfg), [], [], None, self,
                             options={"data_dir": data_cfg.data_dir, "limit": data_cfg.limit})

    def check(self, recipe) -> None:
        if recipe.eval.backend == "lm_eval" and recipe.eval.metrics is not None:
            raise UnlearnError("eval.metrics selects among unlearnkit's own metrics; with eval.backend=lm_eval"
                               " lm-evaluation-harness reports its task's metrics: remove eval.metrics")
        self.resolve_metrics(recipe.eval.metrics)

    def known_metrics(self):
        return ("accuracy", "accuracy_norm")

    def resolve_metrics(self, names):
        """Also accepts SUBSET_accuracy (e.g. bio_accuracy): which subsets exist is known once loaded."""
        subset_names = [n for n in names or () if n.endswith("_accuracy") and n != "accuracy"]
        rest = super().resolve_metrics([n for n in names if n not in subset_names]) if names is not None else None
        return None if names is None else [*rest, *subset_names]

    def metric_names(self, data, eval_cfg):
        return ["accuracy", "accuracy_norm", *(f"{subset}_accuracy" for subset in data.splits)]

    def privacy_enabled(self, data, eval_cfg) -> bool:
        return False

    def selection_rows(self, data):
        raise UnlearnError(f"{self.name} has no forget or retain QA rows to select checkpoints on")

    def forget_question_rows(self, data):
        return [row for rows in data.splits.values() for row in rows]

    def with_forget_rows(self, data, rewrite):
        """Every subset's items rewritten."""
        import dataclasses

        splits = {subset: [rewrite(dict(row)) for row in rows] for subset, rows in data.splits.items()}
        return dataclasses.replace(data, splits=splits)

    def plan(self, ev, data, fmt, eval_cfg, *, retain_truth_ratios=None, retain_auc=None, metrics=None):
        wanted = self.metric_names(data, eval_cfg) if metrics is None else list(metrics)
        if eval_cfg.backend == "lm_eval":
            return self._plan_lm_eval(ev, data, eval_cfg)
        finish_items = plan_multiple_choice(ev, data.splits, topics={s: self.topic(s) for s in data.splits})

        def finish() -> dict:
            result = finish_items()
            every = {"accuracy": result["accuracy"], "accuracy_norm": result["accuracy_norm"],
                     **{f"{s}_accuracy": v["accuracy"] for s, v in result["per_subset"].items()}}
            unknown = [m for m in wanted if m not in every]
            if unknown:
                raise UnlearnError(f"eval.metrics: {unknown[0]} is not reported here; valid: {', '.join(every)}")
            metrics_out = {m: every[m] for m in wanted}
            return {"metrics": metrics_out, "per_sample": result["per_sample"], "per_subset": result["per_subset"],
                    "n": result["n"], "settings": result["settings"]}

        return finish

    def _plan_lm_eval(self, ev, data, eval_cfg):
        from unlearnkit.benchmarks.harness import evaluate_with_lm_eval, local_tasks

        def finish() -> dict:
            data_dir, limit = data.options.get("data_dir"), data.options.get("limit")
            if data_dir is not None:
                result = evaluate_with_lm_eval(ev.model, ev.tokenizer, (), batch_size=ev.batch_size or 32,
                                               local=local_tasks(self.name, data_dir, limit=limit))
            else:
                result = evaluate_with_lm_eval(ev.model, ev.tokenizer, self.lm_eval_tasks,
                                               batch_size=ev.batch_size or 32, limit=limit)
            metrics = {"accuracy": result["accuracy"],
                       **{f"{s}_accuracy": v["accuracy"] for s, v in result["per_subset"].items()}}
            return {"metrics": metrics, "per_subset": result["per_subset"], "n": result["n"],
                    "settings": result.get("settings"), "per_sample": {}}

        return finish


@BENCHMARKS.register("wmdp")
@dataclass
class WmdpBenchmark(MultipleChoice):
    """WMDP (Li et al., 2024): hazardous knowledge, bio and cyber by default (cais/wmdp or local files)."""

    lm_eval_tasks = ("wmdp_bio", "wmdp_cyber")

    def _load(self, data_cfg):
        return load_wmdp(data_cfg.subsets or ("bio", "cyber"), data_cfg.data_dir, limit=data_cfg.limit)

    def topic(self, subset):
        return WMDP_SUBSETS.get(subset, subset)


@BENCHMARKS.register("mmlu")
@dataclass
class MmluBenchmark(MultipleChoice):
    """MMLU (Hendrycks et al., 2021): general knowledge that unlearning should keep (cais/mmlu or local files)."""

    lm_eval_tasks = ("mmlu",)
    forget_metrics = ()  # general knowledge that unlearning keeps: nothing for an attack to recover

    def _load(self, data_cfg):
        return load_mmlu(data_cfg.subsets or None, data_cfg.data_dir, limit=data_cfg.limit)
