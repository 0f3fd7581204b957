"""White-box activation attacks: the weights are unchanged; forward hooks on decoder blocks change the residual
stream while the forget metrics are re-measured, and are removed afterwards.

* ``ablation`` (direction ablation; Arditi et al. 2024, and the refusal-feature ablation of methods/inner_attacks):
  in the unlearned model, per chosen block ℓ,

      r_ℓ = mean_{x ∈ F} h_ℓ(x)[last prompt token] − mean_{x ∈ R} h_ℓ(x)[last prompt token]
      r̂_ℓ = r_ℓ / ‖r_ℓ‖

  (F: up to `n_rows` forget rows, R: as many retain rows, drawn with the run's seed; a bare-text row's last token
  stands for its prompt end), then h ← h − r̂ r̂ᵀ h at every
  token of those blocks. If unlearning works by writing a "suppress this" direction that the forget prompts
  share, removing it brings the knowledge back. A zero direction changes nothing (F.normalize(0) = 0).
* ``latent`` (a universal latent attack; targeted LAT's adversary, Sheshadri et al. 2024, made input-independent
  so it also applies during generation): one vector δ ∈ ℝ^d added to h_ℓ at every token of block ℓ, found by
  `steps` steps of projected gradient ascent on the mean log π(y | x; δ) of the forget answers (`n_rows` rows),
  each step moving δ by `step_size`·ε along its normalised gradient, then back into ‖δ‖₂ ≤ ε. ε = `epsilon` ×
  the mean ‖h_ℓ‖ of those rows' tokens, so one setting means the same on every model size. δ is fitted on the
  forget rows it is then measured on (an upper bound: the white-box adversary knows the answers), gradients
  w.r.t. δ only (`torch.autograd.grad`), so no parameter gradient is touched.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnkit.attacks.base import Attack, AttackRow, AttackTarget
from unlearnkit.data.batch import IGNORE_INDEX, Example, collate
from unlearnkit.data.pairing import encode_rows
from unlearnkit.data.texts import encode_text_rows
from unlearnkit.errors import UnlearnError
from unlearnkit.losses import sequence_logprob
from unlearnkit.methods.base import Layer
from unlearnkit.methods.inner_attacks import refusal_directions
from unlearnkit.model.hooks import (ablate_directions, add_to_outputs, capture_outputs, decoder_layers,
                                    resolve_layers)
from unlearnkit.registry import ATTACKS, Positive, PositiveInt


def _batch(target: AttackTarget, rows: list[dict], n: int, salt: int, prompts_only: bool = False):
    """Up to `n` of `rows` (seeded choice), encoded (QA rows with the format, text rows as text), on the model's
    device. `prompts_only`: text rows lose their labels, so that their "prompt end" is their last token."""
    rows = random.Random(target.seed * 7919 + salt).sample(list(rows), min(n, len(rows)))
    qa = all("question" in r and "answer" in r for r in rows)
    examples = (encode_rows(rows, target.tokenizer, target.fmt, max_length=target.max_length) if qa
                else encode_text_rows(rows, target.tokenizer, max_length=target.max_length))
    if prompts_only and not qa:
        examples = [Example(e.input_ids, (IGNORE_INDEX,) * len(e.input_ids)) for e in examples]
    pad = target.tokenizer.pad_token_id if target.tokenizer.pad_token_id is not None else target.tokenizer.eos_token_id
    return collate(examples, pad).to(next(target.model.parameters()).device)


def _answer_rows(target: AttackTarget) -> list[dict]:
    rows = target.forget_rows()
    if not rows:
        raise UnlearnError(f"this attack fits on forget rows; {target.bench.name} has none to train on")
    return rows


@ATTACKS.register("ablation")
@dataclass
class DirectionAblation(Attack):
    """Direction ablation: project the forget-minus-retain mean activation direction out of the residual stream."""

    layers: Annotated[tuple[Layer, ...], Field(min_length=1)] = (0.25, 0.5, 0.75)  # fractions of depth or indices
    n_rows: PositiveInt = 32  # forget and retain rows whose prompt-end activations give the direction
    cheap: ClassVar[bool] = True

    def directions(self, target: AttackTarget) -> dict[int, torch.Tensor]:
        retain = target.bench.train_retain
        if not retain:
            raise UnlearnError(f"attacks.ablation contrasts forget with retain rows; {target.bench.name} has no"
                               " retain rows here: set attacks.ablation.enabled=false")
        layers = resolve_layers(self.layers, len(decoder_layers(target.model)), "attacks.ablation.layers")
        return refusal_directions(target.model, _batch(target, _answer_rows(target), self.n_rows, 1, True),
                                  _batch(target, retain, self.n_rows, 2, True), layers)

    def run(self, target: AttackTarget) -> list[AttackRow]:
        directions = self.directions(target)
        target.log(f"direction-ablation attack: blocks {sorted(directions)}")
        with ablate_directions(target.model, directions):
            metrics = target.measure(target.model, target.bench)
        return [AttackRow(f"direction ablation (blocks {', '.join(map(str, sorted(directions)))})", metrics,
                          {**self.settings(), "blocks": sorted(directions)})]


@ATTACKS.register("latent")
@dataclass
class LatentAttack(Attack):
    """Latent attack: a bounded residual-stream vector (PGD) that makes the forget answers likelier."""

    layer: Layer = 0.5  # a fraction of depth or a block index
    epsilon: Positive = 0.5  # ‖δ‖₂ ≤ epsilon × mean ‖h‖ at that block
    steps: PositiveInt = 16
    step_size: Positive = 0.25  # each step moves δ by step_size × ε
    n_rows: PositiveInt = 32
    cheap: ClassVar[bool] = False  # 16 forward/backward passes: a recipe option

    def fit(self, target: AttackTarget) -> tuple[int, torch.Tensor]:
        """(block, δ): the perturbation, fitted on up to `n_rows` forget rows."""
        model = target.model
        (layer,) = resolve_layers(self.layer, len(decoder_layers(model)), "attacks.latent.layer")
        batch = _batch(target, _answer_rows(target), self.n_rows, 3)
        with torch.no_grad(), capture_outputs(model, [layer]) as captured:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        norms = captured[layer].float().norm(dim=-1)[batch.attention_mask.bool()]
        radius = self.epsilon * float(norms.mean())
        delta = torch.zeros(captured[layer].shape[-1], device=norms.device, requires_grad=True)
        was_training = model.training
        model.eval()
        try:
            for _ in range(self.steps):
                with torch.enable_grad(), add_to_outputs(model, {layer: delta}):
                    objective = sequence_logprob(model, batch, mean=True).mean()
                    (grad,) = torch.autograd.grad(objective, [delta])
                with torch.no_grad():
                    moved = delta + self.step_size * radius * F.normalize(grad, dim=0)
                    delta = (moved * (radius / moved.norm().clamp(min=radius))).requires_grad_()
        finally:
            model.train(was_training)
        return layer, delta.detach()

    def run(self, target: AttackTarget) -> list[AttackRow]:
        layer, delta = self.fit(target)
        target.log(f"latent attack: block {layer}, ‖δ‖ {float(delta.norm()):.3g}")
        with add_to_outputs(target.model, {layer: delta}):
            metrics = target.measure(target.model, target.bench)
        return [AttackRow(f"latent attack (block {layer}, ε {self.epsilon:g} × mean ‖h‖, {self.steps} steps)",
                          metrics, {**self.settings(), "block": layer, "delta_norm": float(delta.norm())})]
