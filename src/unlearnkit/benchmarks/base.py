"""Benchmarks as registered components (`registry.BENCHMARKS`; `unlearn ls benchmarks`).

A benchmark owns its data, what it measures and what it needs to measure it:

* `load(data_cfg, world_cfg)` → `BenchmarkData`: the evaluation splits and the rows to unlearn, from the
  hub, a local folder or a bundled world; `request_rows` gives one request of a sequential run;
* `metric_names(data, eval_cfg)` → the metric keys it reports (its default set), `aliases` → the reference
  framework's names for them (``forget_Q_A_Prob`` → ``forget_prob``); `eval.metrics` selects a subset;
* `plan(ev, data, fmt, eval_cfg, ...)` asks an `Evaluator` for the passes the selected metrics need and
  returns the function that computes them once the evaluator has run;
* what references its metrics use (a retain model's truth ratios and Min-K% AUC: `truth_ratios`,
  `privacy_enabled`) and which recipe options make sense for it (`check`, and the class attributes).

Nothing outside a benchmark branches on a benchmark's name: the pipeline asks the component. This base is
the TOFU-schema behaviour (QA splits forget / retain / real authors / world facts, holdout for the privacy
suite) that the TOFU benchmark and the two bundled worlds share.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from unlearnkit.errors import UnlearnError
from unlearnkit.registry import did_you_mean
from unlearnkit.logs import info

TOFU_METRICS = ("forget_prob", "forget_rouge", "forget_truth_ratio", "forget_quality", "retain_prob", "retain_rouge",
                "retain_truth_ratio", "ra_prob", "ra_prob_normalised", "ra_rouge", "ra_truth_ratio", "wf_prob",
                "wf_prob_normalised", "wf_rouge", "wf_truth_ratio", "model_utility")
WHITE_BOX_METRICS = ("forget_logit_lens", "forget_linear_probe")  # `white_box`: read from the layers
PRIVACY_METRICS = ("mia_loss", "mia_zlib", "mia_reference", "mia_gradnorm", "mia_min_k", "mia_min_k_plus_plus",
                   "privleak", "extraction_strength", "exact_memorization")
# OpenUnlearning's metric names (its eval configs) -> ours
TOFU_ALIASES = {f"{split}_{theirs}": f"{split}_{ours}" for split in ("forget", "retain", "ra", "wf")
                for theirs, ours in (("Q_A_Prob", "prob"), ("Q_A_ROUGE", "rouge"), ("Truth_Ratio", "truth_ratio"),
                                     ("Q_A_Prob_normalised", "prob_normalised"))}


def replace_split(data: "BenchmarkData", name: str, rows: list) -> "BenchmarkData":
    """`data` whose evaluation split `name` is `rows` (the splits object is copied, not changed)."""
    splits = data.splits
    if dataclasses.is_dataclass(splits):
        splits = dataclasses.replace(splits, **{name: rows})
    else:
        splits = copy.copy(splits)
        setattr(splits, name, rows)
    return dataclasses.replace(data, splits=splits)


@dataclass
class BenchmarkData:
    """A benchmark's data for one run: evaluation splits, and the forget / retain rows to train on."""

    name: str
    splits: Any  # e.g. .forget .retain .real_authors .world_facts (.holdout): TOFU-schema rows
    train_forget: list[dict]
    train_retain: list[dict]
    world: Any = None  # the bundled world's artifacts, when the data comes from one
    component: Any = None  # the Benchmark that loaded it
    options: dict = field(default_factory=dict)  # where it came from (data_dir, limit), for the component
    # linear probes fitted on the first model evaluated with this data, by layer (`white_box`); copies made with
    # dataclasses.replace (attacks' rewritten splits) share them
    probes: dict = field(default_factory=dict)


class Benchmark:
    """A benchmark in TOFU's schema: question / answer rows with paraphrased and perturbed answers."""

    aliases: ClassVar[dict[str, str]] = TOFU_ALIASES
    forget_splits: ClassVar[tuple[str, ...]] = ("forget",)  # valid data.forget_split values
    eval_forget_split: ClassVar[str] = "forget"  # `unlearn eval -b NAME` without --forget-split
    unlearnable: ClassVar[bool] = True  # has a forget set to unlearn (False: an evaluation-only benchmark)
    generated: ClassVar[bool] = False  # a bundled world, generated offline: data.data_dir makes no sense
    world_models: ClassVar[tuple[str, ...]] = ()  # the "world:NAME" models its data comes with
    question_rows: ClassVar[bool] = True  # forget rows are questions (paraphrase attack, cheap selection)
    truth_ratios: ClassVar[bool] = True  # forget quality from a retain model's truth ratios (eval.retain_logs)
    relearn_by_default: ClassVar[bool] = False  # the relearning attack runs unless the recipe says otherwise
    measures_harm: ClassVar[bool] = False  # harmfulness is measured next to its metrics by default
    text_training: ClassVar[bool] = False  # it unlearns raw texts (max_length-token chunks), not QA rows
    # what an attack re-measures (`unlearnkit.attacks`): metrics where lower = forgot more; () = nothing to attack
    forget_metrics: ClassVar[tuple[str, ...]] = ("forget_prob", "forget_rouge", "forget_logit_lens")
    forget_questions: ClassVar[bool] = True  # its forget metrics ask questions (prompt attacks rewrite them)

    @property
    def name(self) -> str:
        return getattr(self, "registry_name", type(self).__name__)

    # ---------------------------------------------------------------------------------------------- data

    def load(self, data_cfg, world_cfg, log: Callable[[str], None] = info, progress: bool = True) -> BenchmarkData:
        raise NotImplementedError  # pragma: no cover - every registered benchmark implements it

    def request_rows(self, data: BenchmarkData, name: str, data_cfg) -> list[dict]:
        """The forget rows of one request of a sequential run (`data.sequential`)."""
        raise UnlearnError(f"data.sequential is not available for {self.name}; run one request per recipe")

    def training_rows(self, data: BenchmarkData, forget_rows: list[dict] | None, tokenizer, max_length) -> tuple[list, list]:
        """(forget rows, retain rows) to train on; `forget_rows` replaces the benchmark's forget split."""
        return (data.train_forget if forget_rows is None else forget_rows), data.train_retain

    def forget_question_rows(self, data: BenchmarkData) -> list[dict]:
        """The rows whose questions its forget metrics ask (prompt attacks prime with them)."""
        return list(data.splits.forget)

    def with_forget_rows(self, data: BenchmarkData, rewrite: Callable[[dict], dict]) -> BenchmarkData:
        """`data` with every forget question row replaced by `rewrite(row)` (prompt attacks); the rows and the
        splits object are copied, never changed."""
        return replace_split(data, "forget", [rewrite(dict(row)) for row in data.splits.forget])

    def with_forget_questions(self, data: BenchmarkData, rewrite: Callable[[str, dict], str]) -> BenchmarkData:
        """`data` with every forget question rewritten by `rewrite(question, row)`."""
        return self.with_forget_rows(data, lambda row: {**row, "question": rewrite(row["question"], row)})

    def selection_rows(self, data: BenchmarkData) -> tuple[list[dict], list[dict]]:
        """(forget, retain) QA rows whose probability `eval.select.metrics=cheap` tracks."""
        return list(data.splits.forget), list(data.splits.retain)

    def world_model_dir(self, data: BenchmarkData, which: str):
        """The folder of the bundled model ``world:WHICH``."""
        valid = ", ".join(f"world:{m}" for m in self.world_models)
        if data.world is None or which not in self.world_models:
            raise UnlearnError(f"model 'world:{which}' is not part of data.benchmark={self.name}"
                               + (f" (its models: {valid})" if valid else "; a world model needs data.benchmark=world"
                                  " (world:target, world:retain; also muse with data.data_dir=world:tiny) or safety"
                                  " (world:aligned, world:compliant)"))
        return data.world.model_dir(which)

    # ------------------------------------------------------------------------------------------- options

    def has_world_models(self, data_cfg) -> bool:
        """Whether ``world:NAME`` models come with this benchmark's data as configured."""
        return bool(self.world_models)

    def check_request(self, name: str) -> None:
        """Refuse a `data.sequential` request name this benchmark does not have."""
        if name not in self.forget_splits:
            raise UnlearnError(f"data.sequential: '{name}' is not a forget split of {self.name}; valid:"
                               f" {', '.join(self.forget_splits)}")

    def check(self, recipe) -> None:
        """Refuse recipe options that make no sense for this benchmark (one line naming the fix)."""
        data = recipe.data
        if data.forget_split not in self.forget_splits:
            raise UnlearnError(f"data.forget_split: '{data.forget_split}' is not a forget split of {self.name};"
                               f" valid: {', '.join(self.forget_splits)}")
        for name in data.sequential:
            self.check_request(name)
        if data.subsets and not hasattr(self, "lm_eval_tasks"):
            raise UnlearnError(f"data.subsets picks WMDP subsets or MMLU subjects; {self.name} has none: remove it")
        if recipe.eval.backend != "unlearnkit" and not getattr(self, "lm_eval_tasks", ()):
            raise UnlearnError(f"eval.backend=lm_eval scores wmdp and mmlu; {self.name} is scored by unlearnkit:"
                               " remove eval.backend")
        if self.generated and data.data_dir is not None:
            raise UnlearnError(f"data.data_dir is read by benchmarks with files (tofu, muse); {self.name} is"
                               " generated: remove data.data_dir")
        if not self.truth_ratios and recipe.eval.retain_logs:
            raise UnlearnError(f"eval.retain_logs holds TOFU truth ratios; {self.name} has none: give"
                               " eval.retain_model for privleak's reference instead")
        self.resolve_metrics(recipe.eval.metrics)

    # ------------------------------------------------------------------------------------------ metrics

    def metric_names(self, data: BenchmarkData, eval_cfg) -> list[str]:
        """Every metric this benchmark reports on `data` (the default set of an evaluation)."""
        return list(TOFU_METRICS + WHITE_BOX_METRICS) + (list(PRIVACY_METRICS) if self.privacy_enabled(data, eval_cfg)
                                                         else [])

    def known_metrics(self) -> tuple[str, ...]:
        return TOFU_METRICS + WHITE_BOX_METRICS + PRIVACY_METRICS

    def resolve_metrics(self, names: Sequence[str] | None) -> list[str] | None:
        """`eval.metrics` as our names (aliases translated); unknown names are refused with a did-you-mean."""
        if names is None:
            return None
        known = list(self.known_metrics())
        out = []
        for name in names:
            ours = self.aliases.get(name, name)
            if ours not in known:
                raise UnlearnError(f"eval.metrics: unknown metric '{name}' for {self.name};"
                                   f"{did_you_mean(name, known + list(self.aliases))} valid: {', '.join(known)}")
            out.append(ours)
        return list(dict.fromkeys(out))

    def privacy_enabled(self, data: BenchmarkData, eval_cfg) -> bool:
        holdout = getattr(data.splits, "holdout", None)
        if eval_cfg.privacy is None:
            return bool(holdout)
        if eval_cfg.privacy and not holdout:
            raise UnlearnError("eval.privacy needs a holdout split (never-trained rows) to compare the forget set"
                               f" with; {self.name} has none here (TOFU: a local folder without holdoutNN files)")
        return eval_cfg.privacy

    def plan(self, ev, data: BenchmarkData, fmt, eval_cfg, *, retain_truth_ratios=None, retain_auc=None,
             metrics: Sequence[str] | None = None) -> Callable[[], dict]:
        """Ask `ev` for the passes of `metrics` (default `metric_names`); return the function that computes
        ``{"metrics", "per_sample", "forget_truth_ratios", ...}`` once `ev.run()` has run."""
        from unlearnkit.benchmarks.privacy import plan_privacy
        from unlearnkit.benchmarks.tofu import plan_tofu
        from unlearnkit.benchmarks.white_box import plan_white_box

        wanted = self.metric_names(data, eval_cfg) if metrics is None else list(metrics)
        tofu_wanted = [m for m in wanted if m in TOFU_METRICS]
        white_box_wanted = [m for m in wanted if m in WHITE_BOX_METRICS]
        privacy_wanted = [m for m in wanted if m in PRIVACY_METRICS]
        if privacy_wanted and not self.privacy_enabled(data, eval_cfg):
            raise UnlearnError(f"eval.metrics asks for {privacy_wanted[0]}, which needs a holdout split; {self.name}"
                               " has none here")
        finish_tofu = plan_tofu(ev, data.splits, fmt, max_new_tokens=eval_cfg.max_new_tokens,
                                retain_truth_ratios=retain_truth_ratios,
                                metrics=tofu_wanted) if tofu_wanted else None
        finish_privacy = plan_privacy(ev, list(data.splits.forget), list(data.splits.holdout), fmt,
                                      retain_min_k_auc=retain_auc, metrics=privacy_wanted) if privacy_wanted else None
        finish_white_box = plan_white_box(ev, data, fmt, white_box_wanted) if white_box_wanted else None

        def finish() -> dict:
            result: dict[str, Any] = {"metrics": {}, "per_sample": {}, "forget_truth_ratios": None}
            if finish_tofu is not None:
                result.update(finish_tofu().to_dict())
                result.pop("seconds", None)
            if finish_privacy is not None:
                privacy = finish_privacy()
                result["per_sample"]["privacy"] = privacy.pop("per_sample")
                result["privleak_reference"] = privacy.pop("privleak_reference")
                result["metrics"].update(privacy)
            if finish_white_box is not None:
                white_box = finish_white_box()
                result["metrics"].update(white_box["metrics"])
                result["per_sample"].update(white_box["per_sample"])  # logit_lens, linear_probe: per layer / per row
            result["metrics"] = {m: result["metrics"][m] for m in wanted}
            return result

        return finish
