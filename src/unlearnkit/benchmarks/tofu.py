"""TOFU evaluation (Maini et al., 2024), with OpenUnlearning's exact metric definitions, in fewer passes.

For each split — forget, retain (``retain_perturbed``), real authors, world facts — every teacher-forced
sequence the split needs (answer; paraphrased answer on forget/retain; each perturbed answer) is built
once and scored in ONE ``score_examples`` call, and the questions are decoded in ONE greedy generation
pass; every metric below is then derived from those arrays (OpenUnlearning runs a separate pass per
metric). Formulas are in ``unlearnkit.metrics``; here, with P̄ the length-normalised probability:

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

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unlearnkit.benchmarks.generation import generate_greedy
from unlearnkit.benchmarks.passes import score_examples
from unlearnkit.errors import UnlearnError
from unlearnkit.metrics.likelihood import (
    average_loss,
    closer_to_1_better,
    probability_over_options,
    true_better,
    truth_ratios,
)
from unlearnkit.metrics.stats import forget_quality, model_utility
from unlearnkit.metrics.text import rouge_scores

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


def _evaluate_split(model, tokenizer, rows, split, fmt, question_key, batch_size, max_new_tokens, progress, seconds):
    prefix, paraphrased, aggregate = SPLITS[split]
    if not rows:
        raise UnlearnError(f"TOFU split {split!r} has no rows; evaluation needs at least one question per split")
    started = time.perf_counter()
    questions, examples, layout = _build(rows, split, paraphrased, fmt, tokenizer, question_key)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    summed, n_tokens = score_examples(model, examples, pad_id, batch_size=batch_size, progress=progress)
    avg_loss = average_loss(summed, n_tokens)
    prob = np.exp(-avg_loss)
    answer_prob = prob[layout.answer]
    correct_loss = avg_loss[layout.paraphrased if paraphrased else layout.answer]
    tr = truth_ratios(correct_loss, [avg_loss[idx] for idx in layout.perturbed])
    seconds[f"{split}_scoring"] = time.perf_counter() - started

    started = time.perf_counter()
    prompts = [fmt.prompt_ids(tokenizer, question) for question in questions]
    generations = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, progress=progress)
    golds = [row["answer"] for row in rows]
    rouge = rouge_scores(golds, generations)
    seconds[f"{split}_generation"] = time.perf_counter() - started

    metrics = {
        f"{prefix}_prob": float(np.mean(answer_prob)),
        f"{prefix}_rouge": float(np.mean(rouge["rougeL_recall"])),
        f"{prefix}_truth_ratio": aggregate(tr),
    }
    samples: dict[str, list] = {
        "question": list(questions), "answer": golds, "generation": generations,
        "prob": answer_prob.tolist(), "rouge_l_recall": rouge["rougeL_recall"],
        "rouge_l_f1": rouge["rougeL_f1"], "rouge1_recall": rouge["rouge1_recall"], "truth_ratio": tr.tolist(),
    }
    if not paraphrased:
        normalised = probability_over_options(answer_prob, [prob[idx] for idx in layout.perturbed])
        metrics[f"{prefix}_prob_normalised"] = float(np.mean(normalised))
        samples["prob_normalised"] = normalised.tolist()
    return metrics, samples, tr


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
) -> TofuResult:
    """Evaluate ``model`` on TOFU's forget/retain/real-author/world-fact splits (see module docstring).

    ``splits`` has attributes ``forget``, ``retain``, ``real_authors``, ``world_facts`` (lists of rows in
    the TOFU perturbed schemas), e.g. ``unlearnkit.data.tofu.TofuSplits``; ``fmt`` is a prompt format
    (``unlearnkit.data.formats``). ``retain_truth_ratios``: the retain model's ``forget_truth_ratios``,
    needed for ``forget_quality``.
    """
    total = time.perf_counter()
    metrics: dict[str, float | None] = {}
    per_sample: dict[str, dict[str, list]] = {}
    seconds: dict[str, float] = {}
    forget_tr = np.array([])
    for split in SPLITS:
        rows = getattr(splits, split, None)
        if rows is None:
            raise UnlearnError(f"TOFU evaluation needs the {split!r} split, and the given splits have none")
        key = question_key if SPLITS[split][1] else "question"
        split_metrics, samples, tr = _evaluate_split(
            model, tokenizer, list(rows), split, fmt, key, batch_size, max_new_tokens, progress, seconds
        )
        metrics.update(split_metrics)
        per_sample[split] = samples
        if split == "forget":
            forget_tr = tr
    metrics["forget_quality"] = forget_quality(forget_tr, retain_truth_ratios)
    metrics["model_utility"] = model_utility(metrics)
    order = ["forget_prob", "forget_rouge", "forget_truth_ratio", "forget_quality", "retain_prob", "retain_rouge",
             "retain_truth_ratio", "ra_prob", "ra_prob_normalised", "ra_rouge", "ra_truth_ratio", "wf_prob",
             "wf_prob_normalised", "wf_rouge", "wf_truth_ratio", "model_utility"]
    seconds["total"] = time.perf_counter() - total
    return TofuResult({k: metrics[k] for k in order}, per_sample, forget_tr.tolist(), seconds)
