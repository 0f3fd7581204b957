"""TOFU evaluation (Maini et al., 2024), with OpenUnlearning's exact metric definitions, in fewer passes.

For each split — forget, retain (``retain_perturbed``), real authors, world facts — every teacher-forced
sequence the split needs (answer; paraphrased answer on forget/retain; each perturbed answer) is built
once and asked of the `Evaluator` with the split's questions to decode greedily (`plan_tofu`); the
evaluator runs each distinct sequence once across every split and metric (the privacy suite's forget
answers included), and every metric below is then derived from those arrays (OpenUnlearning runs a
separate pass per metric). Formulas are in ``unlearnkit.metrics``; here, with P̄ the length-normalised probability:

* ``{split}_prob``           = mean_i P̄(a_i | q_i)                        (original answers)
* ``{ra,wf}_prob_normalised`` = mean_i P̄(a_i) / (P̄(a_i) + Σ_j P̄(â_ij) + 1e-10)
* ``{split}_rouge``          = mean_i ROUGE-L recall(gold a_i, greedy generation ≤ max_new_tokens)
* ``{split}_truth_ratio``    : per sample TR_i = P_false / P_true, the "true" answer being the
  paraphrased answer on forget/retain and the original answer on ra/wf; aggregated as
  mean min(TR, 1/TR) on forget (``closer_to_1_better``) and mean max(0, 1 − TR) elsewhere (``true_better``)
* ``forget_quality``         = KS-test p-value of forget TR_i against the retain model's (None without them)
* ``model_utility``          = harmonic mean of retain_{prob,rouge,truth_ratio},
  ra_{prob_normalised,rouge,truth_ratio}, wf_{prob_normalised,rouge,truth_ratio}

``question_key`` (e.g. ``paraphrased_question``) applies to forget and retain, as in OpenUnlearning;
real-author and world-fact rows are always asked with ``question``. The ``holdout`` split (MIA) is not
used here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from unlearnkit.benchmarks.base import Benchmark, BenchmarkData
from unlearnkit.data.tofu import FORGET_SPLITS
from unlearnkit.errors import UnlearnError
from unlearnkit.metrics.likelihood import (
    average_loss,
    closer_to_1_better,
    probability_over_options,
    true_better,
    truth_ratios,
)
from unlearnkit.metrics.stats import MODEL_UTILITY_KEYS, forget_quality, model_utility
from unlearnkit.metrics.text import rouge_scores
from unlearnkit.registry import BENCHMARKS
from unlearnkit.logs import info

# split attribute -> (metric prefix, has paraphrased answers, truth-ratio aggregation)
SPLITS: dict[str, tuple[str, bool, Any]] = {
    "forget": ("forget", True, closer_to_1_better),
    "retain": ("retain", True, true_better),
    "real_authors": ("ra", False, true_better),
    "world_facts": ("wf", False, true_better),
}


@dataclass
class TofuResult:
    """Aggregate metrics, per-sample values next to them, and where the time went.

    ``forget_truth_ratios`` are the per-sample forget-set TR_i; a retain model's evaluation exports them
    so that later evaluations can pass them as ``retain_truth_ratios`` for forget quality.
    """

    metrics: dict[str, float | None]
    per_sample: dict[str, dict[str, list]]
    forget_truth_ratios: list[float]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (floats, strings, lists, None)."""
        return {
            "metrics": {k: (None if v is None else float(v)) for k, v in self.metrics.items()},
            "per_sample": {split: {k: list(v) for k, v in cols.items()} for split, cols in self.per_sample.items()},
            "forget_truth_ratios": [float(v) for v in self.forget_truth_ratios],
            "seconds": {k: float(v) for k, v in self.seconds.items()},
        }


def _field(row: dict, key: str, split: str, index: int) -> Any:
    if key not in row:
        raise UnlearnError(
            f"TOFU split {split!r}, row {index}: missing key {key!r} (row has {', '.join(sorted(row))}); "
            f"use the *_perturbed files, which carry answer, paraphrased_answer and perturbed_answer"
        )
    return row[key]


@dataclass
class _Layout:
    """Where each row's sequences sit in the split's flat example list."""

    answer: list[int] = field(default_factory=list)
    paraphrased: list[int] = field(default_factory=list)
    perturbed: list[list[int]] = field(default_factory=list)


def _build(rows: list[dict], split: str, paraphrased: bool, fmt: Any, tokenizer: Any, question_key: str):
    """(questions, examples, layout) for every teacher-forced sequence of one split."""
    questions, examples, layout = [], [], _Layout()

    def add(question: str, answer: str) -> int:
        examples.append(fmt.encode(tokenizer, question, answer))
        return len(examples) - 1

    for index, row in enumerate(rows):
        question = _field(row, question_key, split, index)
        questions.append(question)
        layout.answer.append(add(question, _field(row, "answer", split, index)))
        if paraphrased:
            layout.paraphrased.append(add(question, _field(row, "paraphrased_answer", split, index)))
        perturbed = _field(row, "perturbed_answer", split, index)
        if not isinstance(perturbed, list) or not perturbed:
            raise UnlearnError(f"TOFU split {split!r}, row {index}: perturbed_answer must be a non-empty list")
        layout.perturbed.append([add(question, answer) for answer in perturbed])
    return questions, examples, layout


def _plan_split(ev, rows, split, fmt, question_key, decoding, score: bool, generate: bool):
    """Ask `ev` for one split's passes (`score`: its teacher-forced sequences; `generate`: its questions);
    return the function computing the split's metrics from them afterwards."""
    prefix, paraphrased, aggregate = SPLITS[split]
    if not rows:
        raise UnlearnError(f"TOFU split {split!r} has no rows; evaluation needs at least one question per split")
    questions, examples, layout = _build(rows, split, paraphrased, fmt, ev.tokenizer, question_key)
    scores = ev.score(examples) if score else None
    prompts = [fmt.prompt_ids(ev.tokenizer, question) for question in questions]
    generations = ev.generation(prompts, decoding) if generate else None

    def finish():
        golds = [row["answer"] for row in rows]
        metrics: dict[str, float] = {}
        samples: dict[str, list] = {"question": list(questions), "answer": golds}
        tr = np.array([])
        if scores is not None:
            summed, n_tokens = scores.get()
            avg_loss = average_loss(summed, n_tokens)
            prob = np.exp(-avg_loss)
            answer_prob = prob[layout.answer]
            correct_loss = avg_loss[layout.paraphrased if paraphrased else layout.answer]
            tr = truth_ratios(correct_loss, [avg_loss[idx] for idx in layout.perturbed])
            metrics[f"{prefix}_prob"] = float(np.mean(answer_prob))
            metrics[f"{prefix}_truth_ratio"] = aggregate(tr)
            samples.update(prob=answer_prob.tolist(), truth_ratio=tr.tolist())
            if not paraphrased:
                normalised = probability_over_options(answer_prob, [prob[idx] for idx in layout.perturbed])
                metrics[f"{prefix}_prob_normalised"] = float(np.mean(normalised))
                samples["prob_normalised"] = normalised.tolist()
        if generations is not None:
            texts = generations.get()
            rouge = rouge_scores(golds, texts)
            metrics[f"{prefix}_rouge"] = float(np.mean(rouge["rougeL_recall"]))
            samples.update(generation=texts, rouge_l_recall=rouge["rougeL_recall"], rouge_l_f1=rouge["rougeL_f1"],
                           rouge1_recall=rouge["rouge1_recall"])
        return metrics, samples, tr

    return finish


ORDER = ["forget_prob", "forget_rouge", "forget_truth_ratio", "forget_quality", "retain_prob", "retain_rouge",
         "retain_truth_ratio", "ra_prob", "ra_prob_normalised", "ra_rouge", "ra_truth_ratio", "wf_prob",
         "wf_prob_normalised", "wf_rouge", "wf_truth_ratio", "model_utility"]


def plan_tofu(ev, splits: Any, fmt: Any, *, max_new_tokens: int = 200, retain_truth_ratios: list[float] | None = None,
              question_key: str = "question", metrics: Sequence[str] | None = None):
    """Ask `ev` (an `Evaluator`) for the passes the wanted TOFU metrics need (default: all of `ORDER`) — per
    split, the teacher-forced sequences (answer, paraphrased answer, perturbed answers) for probabilities
    and truth ratios, and one greedy generation per question for ROUGE — and return the function that
    computes the `TofuResult` once `ev.run()` has run (see `evaluate_tofu`)."""
    from unlearnkit.benchmarks.generation import Decoding

    wanted = set(ORDER if metrics is None else metrics)
    needed = set(wanted) | (set(MODEL_UTILITY_KEYS) if "model_utility" in wanted else set())
    if "forget_quality" in wanted:
        needed.add("forget_truth_ratio")
    decoding = Decoding(max_new_tokens=max_new_tokens, batch_size=ev.batch_size or 32)
    finishers = {}
    for split, (prefix, _, _) in SPLITS.items():
        score = any(f"{prefix}_{m}" in needed for m in ("prob", "truth_ratio", "prob_normalised"))
        generate = f"{prefix}_rouge" in needed
        if not (score or generate):
            continue
        rows = getattr(splits, split, None)
        if rows is None:
            raise UnlearnError(f"TOFU evaluation needs the {split!r} split, and the given splits have none")
        key = question_key if SPLITS[split][1] else "question"
        finishers[split] = _plan_split(ev, list(rows), split, fmt, key, decoding, score, generate)

    def finish() -> TofuResult:
        computed: dict[str, float | None] = {}
        per_sample: dict[str, dict[str, list]] = {}
        forget_tr = np.array([])
        for split, split_finish in finishers.items():
            split_metrics, samples, tr = split_finish()
            computed.update(split_metrics)
            per_sample[split] = samples
            if split == "forget":
                forget_tr = tr
        if "forget_quality" in wanted:
            computed["forget_quality"] = forget_quality(forget_tr, retain_truth_ratios)
        if "model_utility" in wanted:
            computed["model_utility"] = model_utility(computed)
        return TofuResult({k: computed[k] for k in ORDER if k in wanted}, per_sample, forget_tr.tolist(),
                          dict(ev.seconds))

    return finish


def evaluate_tofu(
    model: Any,
    tokenizer: Any,
    splits: Any,
    fmt: Any,
    *,
    batch_size: int = 32,
    max_new_tokens: int = 200,
    retain_truth_ratios: list[float] | None = None,
    question_key: str = "question",
    progress: bool = False,
    max_tokens: int | None = None,
) -> TofuResult:
    """Evaluate ``model`` on TOFU's forget/retain/real-author/world-fact splits (see module docstring).

    ``splits`` has attributes ``forget``, ``retain``, ``real_authors``, ``world_facts`` (lists of rows in
    the TOFU perturbed schemas), e.g. ``unlearnkit.data.tofu.TofuSplits``; ``fmt`` is a prompt format
    (``unlearnkit.data.formats``). ``retain_truth_ratios``: the retain model's ``forget_truth_ratios``,
    needed for ``forget_quality``. ``max_tokens``: the token budget of a scoring batch.
    """
    from unlearnkit.benchmarks.evaluator import Evaluator

    ev = Evaluator(model, tokenizer, batch_size=batch_size, max_tokens=max_tokens, progress=progress)
    finish = plan_tofu(ev, splits, fmt, max_new_tokens=max_new_tokens, retain_truth_ratios=retain_truth_ratios,
                       question_key=question_key)
    ev.run()
    return finish()


@BENCHMARKS.register("tofu")
@dataclass
class TofuBenchmark(Benchmark):
    """TOFU (Maini et al., 2024): fictitious-author QA from locuslab/TOFU or a local folder."""

    forget_splits = tuple(FORGET_SPLITS)
    eval_forget_split = "forget10"

    def load(self, data_cfg, world_cfg, log=info, progress=True) -> BenchmarkData:
        from unlearnkit.data.tofu import load_tofu

        splits = load_tofu(data_cfg.forget_split, data_cfg.data_dir)
        if data_cfg.limit is not None:  # the first N rows of every evaluation split (quick checks)
            for name in ("forget", "retain", "real_authors", "world_facts", "holdout"):
                rows = getattr(splits, name, None)
                if rows is not None:
                    setattr(splits, name, rows[:data_cfg.limit])
        return BenchmarkData(self.name, splits, splits.forget, splits.retain_train or splits.retain, None, self)

    def request_rows(self, data, name, data_cfg):
        from unlearnkit.data.tofu import load_split

        if name not in FORGET_SPLITS:
            raise UnlearnError(f"unknown forget request '{name}' for tofu; valid: {', '.join(FORGET_SPLITS)}")
        return load_split(name, data_cfg.data_dir)
