"""Gradient difference (GD): ascend on forget, descend on retain.

    L = −γ·CE_θ(B_forget) + α·L_retain,   L_retain = CE_θ(B_retain)  (nll)
                                                   or KL(π_ref ‖ π_θ) on B_retain  (kl)

γ = `forget_weight`, α = `retain_weight` (OpenUnlearning defaults: γ = α = 1, NLL).
With α = 0 it is exactly gradient ascent.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.losses import nll
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS


@METHODS.register("grad_diff")
@dataclass
class GradDiff(RetainRegularised):
    """Gradient ascent on forget plus NLL (or KL) on retain."""


    def forget_loss(self, model, batch, ref):
        forget_nll = nll(model, batch.forget)
        return -forget_nll, {"forget_nll": forget_nll}
