"""RR: representation rerouting, the "circuit breakers" objective (Zou et al., 2024, "Improving Alignment
and Robustness with Circuit Breakers", arXiv:2406.04313).

Forget representations at a few decoder blocks are rerouted away from the frozen model's: made
orthogonal to them (or anti-aligned), so what later blocks read there no longer carries the forget
content. Retain representations are held where they were. With h_ℓ the output of block ℓ (Hugging
Face ``hidden_states[ℓ + 1]``), h_ℓ^ref the frozen model's (the same model with its LoRA adapters off
when it has them, else a frozen copy), S the chosen `layers` and K = blocks 0 … max S:

    L_rr  = mean over real forget tokens and ℓ ∈ S of ReLU(cos(h_ℓ(x_f), h_ℓ^ref(x_f)))
    L_ret = mean over real retain tokens and ℓ ∈ K of ‖h_ℓ(x_r) − h_ℓ^ref(x_r)‖₂
    L     = c_rr · L_rr + c_ret · L_ret,   c_rr = α·(1 − p),  c_ret = α·p,  p = min(1, t / (2T))

t is the optimizer step being taken (1 at the first, whatever grad_accum and however many times a
modifier such as SAM evaluates the loss: the trainer's `after_step` advances it), T = `schedule_steps`;
`setup` restarts the count. At
the start (model = reference) L_ret = 0 and every cosine is 1, so L_rr = 1. Only blocks 0 … max S are
trained (their LoRA adapters on a LoRA model): no later block can change either term.

Choices, from the paper and its code (GraySwanAI/circuit-breakers, lorra_circuit_breaker.py):

* layers (0.29, 0.613): the paper's Llama-3-8B and Mistral-7B runs read hidden_states 10 and 20 of 32
  blocks, i.e. blocks 9 and 19 here; these fractions give 9, 19 on 32 blocks and 1, 2 on the tiny world's 4.
* schedule: the code's c_ret = α·t/300 over its 150 steps is the paper's t/(2T) with T = 150, our default.
  p stops at 1 so that a run longer than 2T keeps c_rr at 0 instead of turning it negative.
* α = 10, the Llama-3 script's lorra_alpha (the Mistral script and the code's default use 5). Under Adam
  the overall scale matters little; the ratio c_rr / c_ret that the schedule moves is what counts.
* the retain term covers blocks 0 … max S, as the code's covers every hidden state of its model cut after
  the deepest chosen layer; the code also averaged over padded positions (distance 0), we over real tokens.
* both terms take every real token, prompt and answer alike, as the code masks by attention only.
* lr_scale 10: the start is a local minimum of L. The gradient of cos at cos = 1 is 0 and L_ret grows
  linearly with any move, so training leaves the start only through finite optimizer steps, and whether
  it does depends on the step size. The paper trains at 1e-4, ten times the 1e-5 of full fine-tuning
  unlearning baselines (TOFU, OpenUnlearning) on such models. On the tiny world (train.lr 5e-4, full
  fine-tuning, 30 steps) the forget answers' probability stays at 0.98 with lr_scale 1 or 4, falls to
  0.36 with 6 and to 0.000 with 10 (retain 0.99 → 0.98). With `model.lora` at the paper's train.lr 1e-4
  (LoRA r 16, α 16, 150 steps) set lr_scale 1.

t is saved in every checkpoint (`state_dict`), so a resumed run continues the schedule exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnkit.errors import UnlearnError
from unlearnkit.methods.base import Layer, LossOutput, UnlearningMethod, summed
from unlearnkit.model.hooks import capture_outputs, decoder_layers, resolve_layers
from unlearnkit.registry import METHODS, Positive, PositiveInt


@METHODS.register("rr")
@dataclass
class RR(UnlearningMethod):
    """Representation rerouting (circuit breakers): forget hidden states orthogonal to the frozen model's."""

    alpha: Positive = 10.0
    layers: Annotated[tuple[Layer, ...], Field(min_length=1)] = (0.29, 0.613)  # blocks 9, 19 of 32; 1, 2 of 4
    schedule_steps: PositiveInt = 150  # T: c_ret reaches α/2 at t = T
    lr_scale: Positive = 10.0  # blocks 0..max S train at lr_scale × train.lr
    reference = "model"  # frozen block outputs on forget and retain data
    uses_retain: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.lr_scale > 0) or self.schedule_steps < 1:
            raise UnlearnError(f"alpha and lr_scale must be > 0 and schedule_steps >= 1, got {self.alpha},"
                               f" {self.lr_scale} and {self.schedule_steps}")
        self.setup(None)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"calls": torch.tensor([self._calls])}  # t of the schedule: a resumed run continues it

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._calls = int(state["calls"][0])

    def setup(self, data) -> None:
        """A run's fresh schedule: t = 0."""
        self._calls = 0

    def rerouted_layers(self, model) -> list[int]:
        return sorted(resolve_layers(self.layers, len(decoder_layers(model)), field="layers"))

    def prepare(self, model):
        deepest = self.rerouted_layers(model)[-1]
        params = [p for block in decoder_layers(model)[: deepest + 1] for p in block.parameters() if p.requires_grad]
        if not params:
            raise UnlearnError(f"rr trains blocks 0..{deepest}, but none of them has a trainable parameter;"
                               " on a LoRA model put adapters there (model.lora.target_modules)")
        return [{"params": params, "lr_scale": self.lr_scale}]

    def coefficients(self) -> tuple[float, float]:
        """(c_rr, c_ret) at the current t."""
        progress = min(1.0, (self._calls + 1) / (2 * self.schedule_steps))  # t = the step being taken
        return self.alpha * (1 - progress), self.alpha * progress

    def _block_outputs(self, model, batch, layers: list[int]) -> dict[int, torch.Tensor]:
        with capture_outputs(model, layers) as captured:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return dict(captured)

    def reroute_loss(self, model, batch, ref) -> torch.Tensor:
        """L_rr: mean ReLU(cos) to the frozen block outputs over real forget tokens and the chosen layers."""
        layers, forget = self.rerouted_layers(model), batch.forget
        hidden, frozen = self._block_outputs(model, forget, layers), ref.hidden_states(forget, layers)
        cos = torch.stack([F.cosine_similarity(hidden[k].float(), frozen[k], dim=-1) for k in layers])  # (S, B, T)
        return F.relu(cos)[:, forget.attention_mask.bool()].mean()

    def retain_loss(self, model, batch, ref) -> torch.Tensor:
        """L_ret: mean L2 distance to the frozen block outputs over real retain tokens and blocks 0..max S."""
        layers, retain = list(range(self.rerouted_layers(model)[-1] + 1)), batch.retain
        hidden, frozen = self._block_outputs(model, retain, layers), ref.hidden_states(retain, layers)
        distance = torch.stack([(hidden[k].float() - frozen[k]).norm(dim=-1) for k in layers])  # (K, B, T)
        return distance[:, retain.attention_mask.bool()].mean()

    def after_step(self, record: dict[str, float]) -> None:
        self._calls += 1  # optimizer steps taken

    def loss_terms(self, model, batch, ref):
        c_rr, c_ret = self.coefficients()

        def forget_term() -> LossOutput:
            forget = self.reroute_loss(model, batch, ref)
            return LossOutput(c_rr * forget, {"forget": forget, "forget_coeff": forget.new_tensor(c_rr)})

        def retain_term() -> LossOutput:
            retain = self.retain_loss(model, batch, ref)
            return LossOutput(c_ret * retain, {"retain": retain, "retain_coeff": retain.new_tensor(c_ret)})

        return [forget_term] + ([retain_term] if batch.retain is not None else [])

    def loss(self, model, batch, ref) -> LossOutput:
        return summed(self.loss_terms(model, batch, ref))
