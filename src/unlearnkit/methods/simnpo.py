"""SimNPO: reference-free, length-normalised NPO (Fan et al., 2024, arXiv:2410.07163).

With ℓ̄_θ(y|x) the per-token mean NLL of the forget answer and no reference model:

    L_forget = −(2/β) · mean_b log σ(β · (ℓ̄_θ(y|x) − δ))
    L        = γ · L_forget + α · L_retain

This is OpenUnlearning's form (δ is multiplied by β). Defaults are its TOFU forget10 values:
β = 4.5, δ = 0, γ = 0.125 ("npo_coeff"), α = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from unlearnkit.losses import sequence_logprob
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS, Finite, NonNegative, Positive


@METHODS.register("simnpo")
@dataclass
class SimNPO(RetainRegularised):
    """Reference-free NPO on length-normalised log-probs, with a margin δ."""

    beta: Positive = 4.5  # divides: (2/β)
    delta: Finite = 0.0
    forget_weight: NonNegative = 0.125

    def forget_loss(self, model, batch, ref):
        mean_nll = -sequence_logprob(model, batch.forget, mean=True)
        forget = -(2 / self.beta) * F.logsigmoid(self.beta * (mean_nll - self.delta)).mean()
        return forget, {"forget_mean_nll": mean_nll.mean()}
