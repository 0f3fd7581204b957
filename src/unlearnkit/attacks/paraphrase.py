"""Paraphrase probe: ask the forget questions in other words.

Unlearning that only suppresses the exact training prompts leaves the knowledge reachable through a
paraphrase. `paraphrased_rows` swaps each row's ``paraphrased_question`` in for ``question`` (TOFU's
*_perturbed files and the bundled tiny world carry it); evaluating the forget split with those rows
shows whether the forgetting generalises beyond the wording it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from unlearnkit.attacks.base import Attack, AttackRow, AttackTarget
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import ATTACKS


def paraphrased_rows(rows: Sequence[dict]) -> list[dict]:
    """Copies of `rows` asked with their paraphrased question (rows without one keep `question`).

    The original question is kept as ``original_question``. Raises `UnlearnError` when no row has a
    ``paraphrased_question``."""
    if not any(row.get("paraphrased_question") for row in rows):
        raise UnlearnError("the paraphrase probe needs rows with a 'paraphrased_question' (TOFU's *_perturbed"
                           " files and the tiny world have it); none of these rows do — set"
                           " attacks.paraphrase=false")
    out = []
    for row in rows:
        new = dict(row)
        if row.get("paraphrased_question"):
            new["original_question"] = row.get("question")
            new["question"] = row["paraphrased_question"]
        out.append(new)
    return out


@ATTACKS.register("paraphrase")
@dataclass
class Paraphrase(Attack):
    """Paraphrase: ask the forget questions in other words (the rows' paraphrased_question); the model is unchanged."""

    cheap: ClassVar[bool] = True

    def on_by_default(self, bench) -> bool:
        return super().on_by_default(bench) and bench.component.question_rows

    def check(self, bench) -> None:
        if not bench.component.question_rows:
            raise UnlearnError(f"attacks.paraphrase rewrites forget questions; {bench.name} has none: set"
                               " attacks.paraphrase=false (relearn and quantize work here)")
        super().check(bench)

    def run(self, target: AttackTarget) -> list[AttackRow]:
        target.log("paraphrase attack: the forget questions in other words")
        from unlearnkit.benchmarks.base import replace_split

        bench = replace_split(target.bench, "forget", paraphrased_rows(target.bench.splits.forget))
        return [AttackRow("paraphrased forget questions", target.measure(target.model, bench))]
