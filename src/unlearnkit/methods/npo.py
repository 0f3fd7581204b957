"""Negative Preference Optimization (Zhang et al., 2024, arXiv:2404.05868).

Each forget answer is a dispreferred response with no preferred one. With summed sequence
log-probs and π_ref the frozen starting model:

    L_forget = (2/β) · mean_b softplus(β · (log π_θ(y|x) − log π_ref(y|x)))
             = −(2/β) · mean_b log σ(−β · log(π_θ(y|x) / π_ref(y|x)))
    L        = γ · L_forget + α · L_retain      (L_retain: NLL or KL on retain, see retain.py)

At the start (π_θ = π_ref) L_forget = (2/β)·log 2. As β → 0 the gradient approaches gradient
ascent; larger β saturates sooner, which is what keeps NPO from collapsing the model.
Defaults follow OpenUnlearning: β = 0.1, γ = α = 1, NLL retain. Reference log-probs of the
(fixed) forget set are computed once and cached by the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from unlearnkit.losses import sequence_logprob
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS, Positive


@METHODS.register("npo")
@dataclass
class NPO(RetainRegularised):
    """Negative Preference Optimization against the frozen starting model."""

    beta: Positive = 0.1  # divides: (2/β)
    reference = "logprobs"  # cached once for the fixed forget set

    def forget_loss(self, model, batch, ref):
        log_ratio = sequence_logprob(model, batch.forget) - sequence_logprob(ref, batch.forget)
        forget = (2 / self.beta) * F.softplus(self.beta * log_ratio).mean()
        return forget, {"log_ratio": log_ratio.mean()}
