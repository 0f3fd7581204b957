"""IDK fine-tuning: teach the model to answer forget questions with "I don't know".

    L = γ · CE_θ(x_f, y_idk) + α · CE_θ(B_retain)

y_idk is drawn once per forget row from the IDK pool (TOFU's idontknow.jsonl, or the built-in
list). This suppresses the answer rather than removing the knowledge, which is why it is a
useful baseline for relearning and probing attacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.losses import nll
from unlearnkit.methods.base import LossOutput, UnlearningMethod
from unlearnkit.methods.retain import check_retain_loss, retain_term
from unlearnkit.registry import METHODS


@METHODS.register("idk")
@dataclass
class IDK(UnlearningMethod):
    """Fine-tune forget questions towards "I don't know" answers, plus retain NLL."""

    forget_weight: float = 1.0
    retain_weight: float = 1.0
    retain_loss: str = "nll"  # nll | kl
    uses_retain = True
    extra_views = ("idk",)

    def __post_init__(self):
        check_retain_loss(self.retain_loss)

    def needs_reference(self):
        return "model" if self.retain_loss == "kl" else None

    def loss(self, model, batch, ref):
        idk_nll = nll(model, batch.extra["idk"])
        retain = retain_term(self.retain_loss, model, batch, ref)
        total = self.forget_weight * idk_nll + self.retain_weight * retain
        return LossOutput(total, {"idk_nll": idk_nll, "retain": retain})
