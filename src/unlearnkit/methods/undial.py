"""UNDIAL: self-distillation towards the frozen model's logits with the answer token pushed down.

Dong et al., 2025, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large
Language Models" (NAACL 2025, arXiv:2402.10052). For each answer position t of the forget batch (A: the
positions whose next token y_t is supervised), with z_ref,t the frozen reference's logits and e_y the
one-hot vector of the answer token:

    q_t      = softmax(z_ref,t − β · e_{y_t})                       (the adjusted teacher; no gradient)
    L_forget = (1/|A|) Σ_{t∈A} CE(π_θ(·|ctx_t), q_t) = −(1/|A|) Σ_{t∈A} Σ_v q_t,v · log π_θ(v|ctx_t)
    L        = γ · L_forget + α · L_retain                          (L_retain: NLL or KL on retain)

The student is pulled towards its own starting distribution with only the answer token's logit lowered
by β, so everything but that token keeps its relative odds. At the start (π_θ = π_ref) with β = 0 the
gradient is exactly zero: d CE / d z_θ = softmax(z_θ) − q = 0.

Defaults are OpenUnlearning's (configs/trainer/UNDIAL.yaml): β = 10, γ = 1, α = 0 (the paper uses no
retain set), NLL retain. With α = 0 no retain rows are paired and no retain forward runs (OpenUnlearning
runs it and multiplies it by 0).

Masking differs from OpenUnlearning's `compute_undial_loss` on purpose. There the one-hot is built by
indexing the vocabulary with the shifted labels *including* −100, which wraps to token V − 100: on every
prompt and padding position the teacher lowers an unrelated token's logit, and the loss is averaged over
all B·(T−1) positions, so prompt and padding positions (a distillation to the unchanged model) dilute the
answer term by a batch-dependent factor. Here only answer positions enter, each with its own answer
token lowered, and the mean is over those positions.

The teacher is the trainer's reference: a frozen copy, or the same model with its adapters off under LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearnkit.losses import logits_of, supervised_logits
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS, NonNegative


@METHODS.register("undial")
@dataclass
class UNDIAL(RetainRegularised):
    """Self-distillation towards the frozen model with the answer token's logit lowered by β."""

    beta: NonNegative = 10.0  # how far the answer token's logit is lowered in the teacher
    retain_weight: NonNegative = 0.0  # α: the paper and OpenUnlearning use no retain term
    reference = "model"  # the teacher's logits on each forget batch

    def needs_retain(self) -> bool:
        return self.retain_weight != 0  # α = 0: no retain rows are paired, so no retain forward runs

    def forget_loss(self, model, batch, ref):
        labels = batch.forget.labels
        student, targets = supervised_logits(logits_of(model, batch.forget), labels)  # (N, V), (N,)
        teacher, _ = supervised_logits(logits_of(ref, batch.forget).detach(), labels)
        teacher = teacher - self.beta * F.one_hot(targets, teacher.shape[-1]).to(teacher)
        logp = torch.log_softmax(student, dim=-1)
        positions = max(len(targets), 1)
        forget = -(torch.softmax(teacher, dim=-1) * logp).sum() / positions
        forget_nll = -logp.detach().gather(-1, targets.unsqueeze(-1)).sum() / positions
        return forget, {"forget_nll": forget_nll}
