"""CE-U (cross-entropy unlearning): cross-entropy towards the model's own distribution minus the answer.

Bo Yang, 2025, "CE-U: Cross Entropy Unlearning" (arXiv:2503.01224). For each answer position t of the
forget batch except the first n answer tokens of each row (A: the positions kept), with z_θ,t the
model's logits, y_t the answer token and sg the stop-gradient:

    q_t      = softmax(sg(z_θ,t) with z_θ,t[y_t] := −∞)       (q_t[y_t] = 0; the rest keep their odds)
    L_forget = −(1/|A|) Σ_{t∈A} Σ_v q_t,v · log π_θ(v | ctx_t)
    L        = γ · L_forget + α · L_retain                     (α = 0 by default: no retain term)

The gradient on the logits is π_θ − q_t: +p_t on the answer token's logit (pushed down by exactly its
probability, so it vanishes as the token is forgotten instead of exploding as in gradient ascent) and
−p_v·p_t/(1 − p_t) on every other token. No reference model is needed.

Defaults are OpenUnlearning's (src/trainer/unlearn/ceu.py): the first n = 1 answer token of each row is
skipped (the trick its code cites from a footnote in the paper's training settings), γ = 1, and no retain
term (OpenUnlearning has none; here α > 0 adds an NLL or KL retain term and pairs retain rows, α = 0 pairs
none). A batch with no answer position left gives 0, not the NaN of a mean over nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnkit.data.batch import IGNORE_INDEX
from unlearnkit.losses import logits_of, supervised_logits
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS, NonNegative, NonNegativeInt


@METHODS.register("ce_u")
@dataclass
class CEU(RetainRegularised):
    """Cross-entropy towards the model's own distribution with the answer token removed (CE-U)."""

    ignore_first_n_answer_tokens: NonNegativeInt = 1  # OpenUnlearning's name and default
    retain_weight: NonNegative = 0.0  # α: CE-U uses no retain term

    def needs_retain(self) -> bool:
        return self.retain_weight != 0  # α = 0: no retain rows are paired

    def forget_loss(self, model, batch, ref):
        labels = batch.forget.labels
        answer = labels != IGNORE_INDEX
        labels = labels.masked_fill(answer & (answer.cumsum(-1) <= self.ignore_first_n_answer_tokens), IGNORE_INDEX)
        logits, targets = supervised_logits(logits_of(model, batch.forget), labels)  # (N, V), (N,)
        target_logits = logits.detach().scatter(-1, targets.unsqueeze(-1), float("-inf"))
        logp = torch.log_softmax(logits, dim=-1)
        positions = max(len(targets), 1)
        forget = -(torch.softmax(target_logits, dim=-1) * logp).sum() / positions
        forget_nll = -logp.detach().gather(-1, targets.unsqueeze(-1)).sum() / positions
        return forget, {"forget_nll": forget_nll}
