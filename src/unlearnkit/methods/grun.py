"""GRUN: Gated Representation UNlearning (Ren et al., 2025, arXiv:2502.17823).

The language model is frozen. At a few decoder blocks a gated LoReFT edit acts on the last
prompt token (`unlearnkit.model.edits`):  h' = h + g(h)·Rᵀ(W h + b − R h),  g = σ(f(h)). Only R, W, b
and the gate train (< 0.1 % of the parameters on the tiny world). With the edit e and labels
z = 1 for forget rows and z = 0 for retain rows:

    L = U_forget + λ_r · U_retain + λ_g · BCE(g_ℓ(x), z)     (gates of every edited layer)

    base gd:   U_forget = −w_f · CE_e(D_f)                  U_retain = CE_e(D_r)
    base npo:  U_forget = c_npo·(2/β)·mean softplus(β(log π_e(y|x) − log π(y|x)))    U_retain = CE_e(D_r)
    base idk:  U_forget = CE_e(D_f with IDK answers)         U_retain = CE_e(D_r)
    base rmu:  U_forget = MSE(h_k^e(x_f), c·u)               U_retain = MSE(h_k^e(x_r), h_k(x_r))

π (and h_k without e) is the *same frozen model with the edits off* — no copy (pitfall 19);
NPO's reference log-probs are cached once. MSE runs over the answer tokens of block k's output
(k = `rmu_layer`; only edits at blocks before k reach the answer tokens there — the seed steers
block 30 with edits at 20/25/31); u ~ U[0,1)^d, unit, fixed. BCE is split evenly between the forget and retain terms (the seed's mean over both halves).
Seed defaults (TOFU): rank 4, layers 20/25/31 of 32 (here fractions 0.65/0.8/1.0 of depth: blocks
20/25/31 of 32, and blocks 2 and 3 of the tiny world's 4 — repeats collapse), lr 4e-3, λ_g 10, λ_r 2 (gd) or 1, c_npo 100,
β 0.1, linear gate; WMDP: mlp gate, λ_g 100, c 300.

Sequential unlearning: each request trains a new edit with the earlier ones switched off
(independent, as the seed); at inference all are summed with scale 0.6·G + 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnkit.model.edits import add_edit, edit_positions, edit_stack, edits_disabled, only_edit_enabled
from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import capture_outputs, decoder_layers, hidden_size, prompt_end_positions, resolve_layers
from unlearnkit.losses import masked_mse, nll_from_logits, sequence_logprob, sequence_logprob_from_logits
from unlearnkit.methods.base import Layer, LossOutput, UnlearningMethod, summed
from unlearnkit.train.reference import is_peft_model
from unlearnkit.registry import METHODS, Finite, NonNegative, Positive, PositiveInt

BASES = ("gd", "npo", "idk", "rmu")


@METHODS.register("grun")
@dataclass
class GRUN(UnlearningMethod):
    """A frozen model plus a gated low-rank edit at the last prompt token, trained with a base loss."""

    base: str = "npo"  # gd | npo | idk | rmu
    layers: Annotated[list[Layer], Field(min_length=1)] = field(default_factory=lambda: [0.65, 0.8, 1.0])
    rank: PositiveInt = 4
    gate: str = "linear"  # linear | mlp
    gate_hidden: list[PositiveInt] = field(default_factory=lambda: [256, 64])
    gate_weight: NonNegative = 10.0  # λ_g
    retain_weight: NonNegative = 1.0  # λ_r
    forget_weight: NonNegative = 1.0  # w_f (gd)
    npo_coeff: NonNegative = 100.0  # c_npo
    beta: Positive = 0.1  # divides: (2/β)
    steering_coeff: Positive = 300.0  # rmu: c
    rmu_layer: Layer = 1.0  # rmu: the block whose output is steered (edits upstream of it reach it)
    combine_scale: Finite = 0.6  # sequential: each of G edits is scaled by combine_scale·G + combine_bias
    combine_bias: Finite = 0.6
    lr: Positive | None = 4e-3  # the edit's learning rate (the seed's); None: the recipe's train.lr
    uses_retain: ClassVar[bool] = True
    supports_lora: ClassVar[bool] = False  # the edit *is* the parameter-efficient part

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise UnlearnError(f"grun: unknown base '{self.base}'; valid: {', '.join(BASES)}")
        if self.gate not in ("linear", "mlp"):
            raise UnlearnError(f"grun: unknown gate '{self.gate}'; valid: linear, mlp")
        if self.rank < 1:
            raise UnlearnError(f"grun: rank must be at least 1, got {self.rank}")

    @property
    def extra_views(self) -> tuple[str, ...]:
        return ("idk",) if self.base == "idk" else ()

    def needs_reference(self) -> str | None:
        return "logprobs" if self.base == "npo" else None  # rmu reads the frozen model itself (edits off)

    def prepare(self, model):
        if is_peft_model(model):
            raise UnlearnError("grun trains its own small edit on a frozen model; remove model.lora from the recipe")
        n_layers = len(decoder_layers(model))
        self._layers = resolve_layers(self.layers, n_layers, "grun.layers")
        self._rmu_layer = resolve_layers(self.rmu_layer, n_layers, "grun.rmu_layer")[0]
        self._edit = add_edit(model, self._layers, self.rank, self.gate, tuple(self.gate_hidden),
                              self.combine_scale, self.combine_bias)
        self._index = len(edit_stack(model).edits) - 1
        generator = torch.Generator().manual_seed(0)
        u = torch.rand(hidden_size(model), generator=generator)
        self._control = self.steering_coeff * u / u.norm()
        return [{"params": list(self._edit.parameters()), "lr": self.lr}]

    def _forward(self, model, batch, capture: list[int] = ()):
        """Logits of the edited model (this request's edit only) and the edit's gates (B, L)."""
        with only_edit_enabled(model, self._edit), edit_positions(model, prompt_end_positions(batch.labels)), \
                capture_outputs(model, capture) as hidden:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        gates = torch.stack([edit_stack(model).gates[(self._index, layer)] for layer in self._layers], dim=-1)
        return logits, gates, dict(hidden)

    def _gate_loss(self, gates, target: float):
        return 0.5 * F.binary_cross_entropy(gates.clamp(1e-6, 1 - 1e-6), torch.full_like(gates, target))

    def _side(self, model, batch, ref, forget: bool):
        capture = [self._rmu_layer] if self.base == "rmu" else []
        logits, gates, hidden = self._forward(model, batch, capture)
        answer = (batch.labels != -100)
        if self.base == "rmu":
            target = self._control.to(logits.device) if forget else _frozen_hidden(model, batch, self._rmu_layer)
            value = masked_mse(hidden[self._rmu_layer], target, answer)
        elif not forget or self.base == "idk":
            value = nll_from_logits(logits, batch.labels)
        elif self.base == "gd":
            value = -self.forget_weight * nll_from_logits(logits, batch.labels)
        else:  # npo against the same model with the edits off
            log_ratio = sequence_logprob_from_logits(logits, batch.labels) - sequence_logprob(ref, batch)
            value = self.npo_coeff * (2 / self.beta) * F.softplus(self.beta * log_ratio).mean()
        return value, gates

    def loss_terms(self, model, batch, ref):
        def forget_term() -> LossOutput:
            forget_batch = batch.extra["idk"] if self.base == "idk" else batch.forget
            forget, gates_f = self._side(model, forget_batch, ref, forget=True)
            bce_f = self._gate_loss(gates_f, 1.0)
            return LossOutput(forget + self.gate_weight * bce_f, {"forget": forget.detach(), "gate_forget":
                              gates_f.mean().detach(), "bce_forget": bce_f.detach()})

        def retain_term() -> LossOutput:
            retain, gates_r = self._side(model, batch.retain, ref, forget=False)
            bce_r = self._gate_loss(gates_r, 0.0)
            return LossOutput(self.retain_weight * retain + self.gate_weight * bce_r, {"retain": retain.detach(),
                              "gate_retain": gates_r.mean().detach(), "bce_retain": bce_r.detach()})

        return [forget_term, retain_term]

    def loss(self, model, batch, ref):
        return summed(self.loss_terms(model, batch, ref))


def _frozen_hidden(model, batch, layer: int) -> torch.Tensor:
    """Block `layer`'s output on `batch` with every edit off (the frozen model), no gradients."""
    with torch.no_grad(), edits_disabled(model), capture_outputs(model, [layer]) as hidden:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return hidden[layer].float()


