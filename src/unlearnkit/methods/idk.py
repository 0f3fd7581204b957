"""IDK fine-tuning: teach the model to answer forget questions with "I don't know".

    L = γ · CE_θ(x_f, y_idk) + α · CE_θ(B_retain)

y_idk is drawn once per forget row from the IDK pool (TOFU's idontknow.jsonl, or the built-in
list). This suppresses the answer rather than removing the knowledge, which is why it is a
useful baseline for relearning and probing attacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.losses import nll
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS


@METHODS.register("idk")
@dataclass
class IDK(RetainRegularised):
    """Fine-tune forget questions towards "I don't know" answers, plus retain NLL."""

    extra_views = ("idk",)

    def forget_loss(self, model, batch, ref):
        idk_nll = nll(model, batch.extra["idk"])
        return idk_nll, {"idk_nll": idk_nll}
