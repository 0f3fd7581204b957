"""Gradient ascent (GA): raise the loss on the forget set.

    L = −CE_θ(B_forget)

CE is the token-weighted mean NLL over the batch's answer tokens. With no retain term nothing
holds the rest of the model in place, so GA collapses quickly; it is the baseline every other
method is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.losses import nll
from unlearnkit.methods.base import LossOutput, UnlearningMethod
from unlearnkit.registry import METHODS


@METHODS.register("grad_ascent")
@dataclass
class GradAscent(UnlearningMethod):
    """Maximise NLL on the forget set (no retain term)."""

    def loss(self, model, batch, ref):
        forget_nll = nll(model, batch.forget)
        return LossOutput(-forget_nll, {"forget_nll": forget_nll})
