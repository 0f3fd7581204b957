"""Text-overlap metrics between generations and gold answers (OpenUnlearning ``eval_text_similarity``).

ROUGE comes from Google's ``rouge_score`` package, ``RougeScorer(["rouge1", "rougeL"], use_stemmer=True)``,
called as ``scorer.score(target=gold, prediction=generation)``. Per sample:

* ``rouge1_recall`` = |unigram overlap| / |gold unigrams|
* ``rougeL_recall`` = LCS(gold, generation) / |gold tokens|      (TOFU's "…_ROUGE" metrics average this)
* ``rougeL_f1``     = 2·P·R / (P + R) with P = LCS / |generation tokens|  (MUSE uses the F1)

rouge_score lower-cases, keeps only ``[a-z0-9]`` runs as tokens and Porter-stems them, so spacing and
punctuation differences between decoders do not change the scores.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

ROUGE_KEYS = ("rouge1_recall", "rougeL_f1", "rougeL_recall")


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge(gold: str, generation: str) -> dict[str, float]:
    """ROUGE of one generation against one gold answer: the three ``ROUGE_KEYS``."""
    scores = _scorer().score(target=gold, prediction=generation)
    return {
        "rouge1_recall": float(scores["rouge1"].recall),
        "rougeL_f1": float(scores["rougeL"].fmeasure),
        "rougeL_recall": float(scores["rougeL"].recall),
    }


def rouge_scores(golds: Sequence[str], generations: Sequence[str]) -> dict[str, list[float]]:
    """Per-sample ROUGE for paired lists: ``{"rouge1_recall": [...], "rougeL_f1": [...], "rougeL_recall": [...]}``."""
    if len(golds) != len(generations):
        raise ValueError(f"rouge_scores needs as many generations ({len(generations)}) as gold answers ({len(golds)})")
    columns: dict[str, list[float]] = {key: [] for key in ROUGE_KEYS}
    for gold, generation in zip(golds, generations):
        for key, value in rouge(gold, generation).items():
            columns[key].append(value)
    return columns


def cut_at_stop_strings(text: str, stop_strings: Sequence[str] = ()) -> str:
    """Keep what comes before the first occurrence of each stop string in turn, then strip whitespace."""
    for stop in stop_strings:
        if stop and stop in text:
            text = text.split(stop)[0]
    return text.strip()
