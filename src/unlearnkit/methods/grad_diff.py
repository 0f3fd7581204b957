"""Gradient difference (GD): ascend on forget, descend on retain.

    L = −γ·CE_θ(B_forget) + α·L_retain,   L_retain = CE_θ(B_retain)  (nll)
                                                   or KL(π_ref ‖ π_θ) on B_retain  (kl)

γ = `forget_weight`, α = `retain_weight` (OpenUnlearning defaults: γ = α = 1, NLL).
With α = 0 it is exactly gradient ascent.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.losses import nll
from unlearnkit.methods.base import LossOutput, UnlearningMethod
from unlearnkit.methods.retain import check_retain_loss, retain_term
from unlearnkit.registry import METHODS


@METHODS.register("grad_diff")
@dataclass
class GradDiff(UnlearningMethod):
    """Gradient ascent on forget plus NLL (or KL) on retain."""

    forget_weight: float = 1.0
    retain_weight: float = 1.0
    retain_loss: str = "nll"  # nll | kl
    uses_retain = True

    def __post_init__(self):
        check_retain_loss(self.retain_loss)

    def needs_reference(self):
        return "model" if self.retain_loss == "kl" else None

    def loss(self, model, batch, ref):
        forget_nll = nll(model, batch.forget)
        retain = retain_term(self.retain_loss, model, batch, ref)
        total = -self.forget_weight * forget_nll + self.retain_weight * retain
        return LossOutput(total, {"forget_nll": forget_nll, "retain": retain})
