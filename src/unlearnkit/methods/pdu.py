"""PDU: primal–dual unlearning — flatten the forget logits, keep the retain loss under a bound ε.

Entesari et al., 2025, "Constrained Entropic Unlearning: A Primal-Dual Framework for Large Language
Models" (arXiv:2506.05314), as OpenUnlearning implements it. With M the answer positions of the forget batch
and z_t the logits that predict answer token t (the mask shifted to the prediction positions):

    L_f      = (1/|M|) Σ_{t∈M} (max_v z_{t,v} − mean_v z_{t,v})²           (logit-margin flattening)
    L        = γ · L_f + λ · (L_ret − ε)                                     (L_ret: NLL or KL on retain)
    λ        ← max(0, λ + η · (L̄_ret − ε))                                  once per optimizer step

λ (the dual variable) starts at `retain_weight` (α) and is trainer state: L̄_ret is the step's retain loss averaged
over micro-batches *and ranks* (the trainer's logged mean, `after_step`), so every rank holds the same λ, and
λ is saved in every checkpoint (`state_dict`), so a resumed run continues it. The first `dual_warmup_steps`
steps keep λ fixed. The constant −λε changes no gradient; it is logged as `constraint` = L_ret − ε.

Fixed against OpenUnlearning: its λ is updated inside `compute_loss` (per micro-batch, on each rank apart),
its forget mask is not shifted to the prediction positions, and ε has no default (`???`). Here ε defaults to
0.3, the value of OpenUnlearning's community TOFU run for an NLL retain loss; set it for your model (it bounds
the retain loss you accept). γ = 1, η = 1 and λ₀ = α = 1 are OpenUnlearning's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnkit.losses import logits_of, supervised_logits
from unlearnkit.methods.base import LossOutput, RetainRegularised, summed
from unlearnkit.registry import METHODS, NonNegative, NonNegativeInt


@METHODS.register("pdu")
@dataclass
class PDU(RetainRegularised):
    """Primal–dual: flatten forget logits; a dual variable keeps the retain loss below ε."""

    epsilon: NonNegative = 0.3  # ε: the retain loss the constraint allows
    dual_lr: NonNegative = 1.0  # η: the dual ascent step
    dual_warmup_steps: NonNegativeInt = 0  # optimizer steps before λ moves

    def __post_init__(self) -> None:
        super().__post_init__()
        self.setup(None)

    def setup(self, data) -> None:
        self._dual, self._steps = float(self.retain_weight), 0  # λ₀ = α (`retain_weight`), as in OpenUnlearning

    def forget_loss(self, model, batch, ref):
        logits, _ = supervised_logits(logits_of(model, batch.forget), batch.forget.labels)  # (N, V)
        margin = logits.max(-1).values - logits.mean(-1)
        forget = (margin**2).mean() if len(margin) else logits.sum() * 0.0
        return forget, {"margin": margin.detach().mean() if len(margin) else forget.detach()}

    def loss_terms(self, model, batch, ref):
        def forget_term() -> LossOutput:
            forget, logged = self.forget_loss(model, batch, ref)
            return LossOutput(self.forget_weight * forget, {"forget": forget, **logged})

        def retain_term() -> LossOutput:  # always computed: λ needs the retain loss even while it is 0
            retain = self._retain(model, batch, ref)
            return LossOutput(self._dual * (retain - self.epsilon),
                              {"retain": retain, "constraint": retain.detach() - self.epsilon,
                               "dual": torch.tensor(self._dual)})

        return [forget_term] + ([retain_term] if batch.retain is not None else [])

    def loss(self, model, batch, ref):
        return summed(self.loss_terms(model, batch, ref))

    def after_step(self, record: dict[str, float]) -> None:
        self._steps += 1
        if self._steps > self.dual_warmup_steps and "retain" in record:
            self._dual = max(0.0, self._dual + self.dual_lr * (record["retain"] - self.epsilon))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"dual": torch.tensor([self._dual], dtype=torch.float64), "steps": torch.tensor([self._steps])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._dual, self._steps = float(state["dual"][0]), int(state["steps"][0])
