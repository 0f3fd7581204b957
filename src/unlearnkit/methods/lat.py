"""Targeted LAT: targeted latent adversarial training for unlearning (Sheshadri et al., 2024, arXiv:2407.15549).

Each step is a min-max problem. The adversary ("targeted": it has a target, the forget answer) adds a
perturbation δ_ℓ (B, T, d) to the output h_ℓ of chosen decoder blocks ℓ ∈ S, within a per-token L2 ball,
to make the forget answer likely again; the model is then trained to forget *under* that perturbation:

    δ*  = argmax_{‖δ_t‖₂ ≤ ε}  log π_θ(y_f | x_f; δ)              K PGD steps (inner_attacks.latent_pgd)
    L   = γ · L_forget(π_θ(· | x_f; δ*)) + α · L_retain(π_θ on x_r, clean)

L_forget (`forget_objective`, on the attacked forget pass only):

* "away" (default): the paper's code's defence "away" loss (`log_1_minus_p_loss` in LLM-LAT's
  `latent_at`), mean over supervised forget tokens of −log(1 − p_θ(y_t | x, y_<t; δ*)), p clamped
  at 1 − 1e-6. Bounded below by 0, so it does not collapse the model the way gradient ascent does.
* "ga": −CE_θ(y_f | x_f; δ*): gradient difference under the attack (radius 0 gives `grad_diff` exactly).
* "npo": (2/β)·mean softplus(β·log(π_θ(y|x; δ*)/π_ref(y|x))) (radius 0 gives `npo` exactly).

L_retain is NLL (or KL, `retain_loss`) on the clean retain rows: the paper's "sft" term, computed with
the adversary switched off (RetainRegularised; the trainer backpropagates the two terms separately).

Choices ([P]: from the paper and its released code, checked only as far as a search could reach):

* The adversary minimises the NLL of the forget answers ("toward" the forget text); its "away" term
  (pushing away from a safe answer) is off, as in the paper's unlearning runs. The defence's "toward"
  term (NLL of alternative, e.g. WHP-generic, completions) is not included: use IDK data with another
  method for that; here γ·away + α·sft.
* PGD is ERU's `latent_pgd`: δ starts at 0 (the paper's adversary starts at 0 or small noise),
  K steps of size `pgd_step_size`·ε along the per-token normalised gradient, projected back to the
  ball, every token of the forget row perturbed (the paper masks by its attack mask; for QA rows we
  perturb prompt and answer alike). Deterministic: no RNG, no counter, so `state_dict` stays empty
  and resume is exact without one.
* The attack runs at every step (the paper attacks every batch). ε = 4 on the tiny world (≈ 4 % of
  ‖h‖, ERU's value; the paper's ε is model-specific, a few units on Llama-sized residual norms); K = 4
  (the paper uses more, ~16: expensive on CPU); layers (0.25, 0.5, 0.75) of depth — several residual
  layers spread across depth, as the paper's (e.g. 8, 16, 24, 30 of 32).
* ε = 0 or K = 0 leaves δ = 0 exactly, and the loss is the base objective's exactly (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnkit.errors import UnlearnError
from unlearnkit.losses import logits_of, nll_from_logits, sequence_logprob, token_logprobs
from unlearnkit.methods.base import Layer, RetainRegularised
from unlearnkit.methods.inner_attacks import latent_pgd
from unlearnkit.model.hooks import add_to_outputs, decoder_layers, resolve_layers
from unlearnkit.registry import METHODS, NonNegative, NonNegativeInt, Positive

FORGET_OBJECTIVES = ("away", "ga", "npo")


def away_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over supervised tokens of −log(1 − p(y_t)), p clamped below 1 − 1e-6 (the paper's away loss)."""
    logp, mask = token_logprobs(logits, labels)
    p = logp.exp().clamp(max=1 - 1e-6)
    return (-torch.log1p(-p) * mask).sum() / mask.sum().clamp(min=1)


@METHODS.register("lat")
@dataclass
class LAT(RetainRegularised):
    """Targeted LAT: forget under a latent PGD attack that restores the forget answers, plus retain NLL."""

    forget_objective: str = "away"  # away | ga | npo
    beta: Positive = 0.1  # NPO's β, for forget_objective "npo"
    layers: Annotated[tuple[Layer, ...], Field(min_length=1)] = (0.25, 0.5, 0.75)
    pgd_radius: NonNegative = 4.0
    pgd_steps: NonNegativeInt = 4
    pgd_step_size: Positive = 0.5
    reference: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forget_objective not in FORGET_OBJECTIVES:
            raise UnlearnError(f"forget_objective must be one of {', '.join(FORGET_OBJECTIVES)},"
                               f" got '{self.forget_objective}'")

    def needs_reference(self) -> str | None:
        if self.retain_loss == "kl":
            return "model"
        return "logprobs" if self.forget_objective == "npo" else None

    def attacked_layers(self, model) -> list[int]:
        return resolve_layers(list(self.layers), len(decoder_layers(model)), field="layers")

    def attack(self, model, forget) -> dict[int, torch.Tensor]:
        """{ℓ: δ*_ℓ}: the adversary's perturbation for this forget batch (detached, ‖δ_t‖₂ ≤ ε)."""
        return latent_pgd(model, forget, self.attacked_layers(model), self.pgd_radius, self.pgd_steps,
                          self.pgd_step_size)

    def runs_inner_backward(self) -> bool:
        return True  # the latent PGD adversary (refused under DeepSpeed, whose hooks catch every backward)

    def forget_loss(self, model, batch, ref):
        deltas = self.attack(model, batch.forget)
        with add_to_outputs(model, deltas):
            logits = logits_of(model, batch.forget)
        labels = batch.forget.labels
        attacked_nll = nll_from_logits(logits, labels)
        logged = {"attacked_nll": attacked_nll,
                  "delta_norm": max(d.norm(dim=-1).max() for d in deltas.values()).detach()}
        if self.forget_objective == "away":
            return away_loss(logits, labels), logged
        if self.forget_objective == "ga":
            return -attacked_nll, logged
        logp, mask = token_logprobs(logits, labels)
        log_ratio = logp.sum(-1) - sequence_logprob(ref, batch.forget)
        return (2 / self.beta) * F.softplus(self.beta * log_ratio).mean(), {**logged, "log_ratio": log_ratio.mean()}
