"""Weighted gradient ascent (WGA): gradient ascent with each forget token weighted by its own probability.

Wang et al., 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond"
(ICLR 2025, arXiv:2502.19301). With p_t = π_θ(y_t | x, y_<t) over the answer tokens A of the batch
and sg the stop-gradient:

    w_t      = sg(p_t)^β
    L_forget = −(1/|A|) Σ_{t∈A} w_t · (−log p_t)  =  (1/|A|) Σ_{t∈A} w_t · log p_t
    L        = γ · L_forget + α · L_retain                (L_retain: NLL or KL on retain, see retain.py)

The gradient of −log p_t is scaled by p_t^β, so tokens the model has already made unlikely stop
pulling, which is what slows GA's collapse. β = 0 gives w_t = 1: exactly gradient ascent (the
token-weighted mean NLL of `grad_ascent`), in value and gradient.

Defaults are OpenUnlearning's (configs/trainer/WGA.yaml): β = 1, γ = 1, α = 1, NLL retain.
Unlike OpenUnlearning's trainer, no reference model is built: WGA never reads one.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.losses import logits_of, token_logprobs
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS, NonNegative


@METHODS.register("wga")
@dataclass
class WGA(RetainRegularised):
    """Gradient ascent with each forget token weighted by sg(p)^β (WGA), plus NLL on retain."""

    beta: NonNegative = 1.0  # 0: plain gradient ascent

    def forget_loss(self, model, batch, ref):
        logp, mask = token_logprobs(logits_of(model, batch.forget), batch.forget.labels)  # (B, T-1), 0 off-answer
        weight = logp.detach().exp() ** self.beta * mask
        tokens = mask.sum().clamp(min=1)
        forget = (weight * logp).sum() / tokens
        return forget, {"forget_nll": -logp.detach().sum() / tokens, "weight": weight.sum() / tokens}
