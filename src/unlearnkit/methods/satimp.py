"""SatImp: gradient ascent with saturation- and importance-based token weights.

Yang et al., 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning"
(ICML 2025, arXiv:2505.11953). With p_t = π_θ(y_t | x, y_<t) over the answer tokens A of the batch
and sg the stop-gradient:

    w_t      = sg(p_t)^β1 · sg(1 − p_t)^β2
    L_forget = (1/|A|) Σ_{t∈A} w_t · log p_t             (= −mean w_t · NLL_t: weighted gradient ascent)
    L        = γ · L_forget + α · L_retain                (L_retain: NLL or KL on retain, see retain.py)

p^β1 ("saturation") stops pushing tokens that are already unlikely, like WGA; (1 − p)^β2
("importance") also damps tokens the model is near-certain of. β1 = β2 = 0 is exactly gradient
ascent; β2 = 0 is WGA with β = β1. With β1 = 5, β2 = 1 the weight is at most ≈ 0.067 (at p = 5/6).

Defaults: β1 = 5, β2 = 1 (OpenUnlearning's configs/trainer/SatImp.yaml), γ = 1, α = 0.1, NLL retain.
OpenUnlearning disagrees with itself on γ/α: its YAML says γ = 0.1, α = 1; its community README and the
trainer's own keyword defaults say γ = 1, α = 0.1. We take γ = 1, α = 0.1 because it is also what the
authors' code runs (tmlr-group/SatImp, `satimp_gd`: forget + coeff · retain with coeff = 0.1); the YAML
looks like the two swapped. It matters: with the YAML's weights the forget push is at most
0.1 · 0.067 per token against a full retain NLL, and on the tiny world SatImp then barely forgets
(forget_prob 0.98 → 0.76; → 0.05 with γ = 1, α = 0.1). `method.forget_weight=0.1 method.retain_weight=1`
reproduces what OpenUnlearning's `trainer=SatImp` runs.
Unlike OpenUnlearning's trainer, no reference model is built: SatImp never reads one.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.losses import logits_of, token_logprobs
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS, NonNegative


@METHODS.register("satimp")
@dataclass
class SatImp(RetainRegularised):
    """Gradient ascent with token weights sg(p)^β1·sg(1−p)^β2 (SatImp), plus NLL on retain."""

    beta1: NonNegative = 5.0  # saturation exponent
    beta2: NonNegative = 1.0  # importance exponent
    retain_weight: NonNegative = 0.1  # α: the authors' code and OpenUnlearning's README (its YAML says 1, γ 0.1)

    def forget_loss(self, model, batch, ref):
        logp, mask = token_logprobs(logits_of(model, batch.forget), batch.forget.labels)  # (B, T-1), 0 off-answer
        p = logp.detach().exp()
        weight = p ** self.beta1 * (1 - p).clamp(min=0) ** self.beta2 * mask
        tokens = mask.sum().clamp(min=1)
        forget = (weight * logp).sum() / tokens
        return forget, {"forget_nll": -logp.detach().sum() / tokens, "weight": weight.sum() / tokens}
