"""ERU (reconstructed): Elastic Robust Unlearning (Sui et al., NeurIPS 2025, OpenReview VrXjAfdwrN).

The paper's code is not public; every formula below is our reconstruction (specs/methods.md §7.2),
each choice a field, and results should be labelled "ERU (reconstructed)". For a forget pair (x, y)
with summed log-probs, |y| supervised tokens and π_ref the frozen start (log-probs cached):

    r_ref  = β · log(π_θ(y|x) / π_ref(y|x))                       NPO's reward
    r_free = (β/|y|) · log π_θ(y|x) + γ                            SimNPO's reward
    r_el   = λ · r_ref + (1 − λ) · r_free                          the elastic reward
    L_f    = −(2/β) · mean_b log σ(−r_el)  (= (2/β)·mean softplus(r_el))
    L      = w_f · L_f + α · L_retain      (forget_weight, retain_weight; NLL or KL, see retain.py)

λ (`mix`): "fixed" = `mix_weight`; "linear" = max(0, 1 − t/`mix_steps`), t the optimizer steps taken
before this one (0 at the first, whatever grad_accum: the trainer's `after_step` advances it);
"confidence" = σ(κ·(ℓ̄_ref − m)) per sample (κ = `mix_scale`, m = `mix_margin`, ℓ̄_ref the
reference per-token NLL): well-memorised rows lean on the reference-free reward.
λ = 1 is NPO exactly; λ = 0 is SimNPO (its δ = γ/β).

Inner maximisation (`inner_attack`), applied to the forget pass with probability `attack_prob` per
call, at every block from `attack_layers[0]` to `attack_layers[1]` (ints or fractions of depth;
the default (0.25, 1.0) is ReFAT's "last 75 % of layers"); L_f uses the attacked pass, L_retain
the clean one (methods/inner_attacks.py):

* "rfa": refusal-feature ablation h ← h − r̂ r̂ᵀ h, r̂_ℓ the unit difference of mean last-prompt-token
  block outputs, forget minus retain; recomputed under the current model when older than
  `refresh_every` optimizer steps, from `contrast_rows` rows per side drawn (seed `seed`) from the whole
  training data given to `setup` (a bare `loss` call without `setup` uses the batch's own rows);
* "pgd": latent PGD, δ with per-token ‖δ‖₂ ≤ `pgd_radius`, `pgd_steps` ascent steps of
  `pgd_step_size`·ε on the forget likelihood (an ablation arm, not ERU);
* "none": no inner attack (the elastic reward alone).

Starting values: ReFAT's p = 0.5, k = 4, n = 32, last 75 %; NPO's β = 0.1; λ = 0.7 fixed, ε = 4
(≈ 4 % of ‖h‖) and mix_steps = 30 (the default recipe's steps) are tuned on the tiny world.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import ablate_directions, add_to_outputs, decoder_layers, resolve_layers
from unlearnkit.losses import sequence_logprob, shifted_labels
from unlearnkit.methods.base import Layer, RetainRegularised
from unlearnkit.methods.inner_attacks import latent_pgd, refusal_directions, sample_rows
from unlearnkit.registry import METHODS, Finite, Fraction, NonNegative, Positive, PositiveInt, Seed

# λ for a batch: a number, or (B,) per sample ("confidence"); `method._calls` counts optimizer steps taken
MIX_RULES = {
    "fixed": lambda method, batch, ref: method.mix_weight,
    "linear": lambda method, batch, ref: max(0.0, 1.0 - method._calls / method.mix_steps),
    "confidence": lambda method, batch, ref: torch.sigmoid(
        method.mix_scale * (-sequence_logprob(ref, batch.forget, mean=True) - method.mix_margin)),
}
INNER_ATTACKS = ("none", "rfa", "pgd")


@METHODS.register("eru")
@dataclass
class ERU(RetainRegularised):
    """ERU (reconstructed): NPO/SimNPO elastic reward, trained against refusal-feature ablation."""

    beta: Positive = 0.1  # divides: (2/β)
    gamma: Finite = 0.0
    mix: str = "fixed"  # fixed | linear | confidence
    mix_weight: Fraction = 0.7
    mix_steps: PositiveInt = 30
    mix_scale: Finite = 4.0
    mix_margin: Finite = 0.0
    inner_attack: str = "rfa"  # none | rfa | pgd
    attack_prob: Fraction = 0.5
    attack_layers: tuple[Layer, Layer] = (0.25, 1.0)
    refresh_every: PositiveInt = 4
    contrast_rows: PositiveInt = 32
    pgd_radius: NonNegative = 4.0
    pgd_steps: PositiveInt = 4
    pgd_step_size: Positive = 0.5
    seed: Seed = 0
    reference = "logprobs"  # cached once for the fixed forget set
    label: ClassVar[str] = "ERU (reconstructed)"  # how reports name it: the paper's code is not public

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, valid in (("mix", MIX_RULES), ("inner_attack", INNER_ATTACKS)):
            if getattr(self, name) not in valid:
                raise UnlearnError(f"{name} must be one of {', '.join(valid)}, got '{getattr(self, name)}'")
        if self.beta <= 0:
            raise UnlearnError(f"beta must be > 0, got {self.beta}")
        ranges = {"mix_weight": (0, 1), "attack_prob": (0, 1), "mix_steps": (1, None), "refresh_every": (1, None),
                  "contrast_rows": (1, None), "pgd_steps": (1, None), "pgd_radius": (0, None)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise UnlearnError(f"{name} must be {bound}, got {value}")
        self.setup(None)

    def setup(self, data) -> None:
        """Fresh state for a run: the data the contrast rows come from, the RNG, the step count."""
        self._data = data
        self._generator = torch.Generator().manual_seed(self.seed)
        self._calls = 0
        self._directions: dict[int, torch.Tensor] | None = None
        self._directions_at = 0

    def after_step(self, record: dict[str, float]) -> None:
        self._calls += 1  # optimizer steps taken: the "linear" mix and the directions' age

    def runs_inner_backward(self) -> bool:
        return self.inner_attack == "pgd"  # latent PGD differentiates the model inside the loss

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Step count, the inner attack's RNG and its cached refusal directions: a resumed run continues them."""
        state = {"calls": torch.tensor([self._calls]), "directions_at": torch.tensor([self._directions_at]),
                 "generator": self._generator.get_state()}
        for layer, direction in (self._directions or {}).items():
            state[f"direction.{layer}"] = direction.detach().cpu()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._calls, self._directions_at = int(state["calls"][0]), int(state["directions_at"][0])
        self._generator.set_state(state["generator"])
        directions = {int(k.split(".", 1)[1]): v for k, v in state.items() if k.startswith("direction.")}
        self._directions = directions or None

    def attacked_layers(self, model) -> list[int]:
        n_layers = len(decoder_layers(model))
        first, last = (resolve_layers(end, n_layers, field="attack_layers")[0] for end in self.attack_layers)
        if first > last:
            raise UnlearnError(f"attack_layers {self.attack_layers} resolve to blocks {first}..{last};"
                               " give (first, last) with first <= last")
        return list(range(first, last + 1))

    def _contrast_rows(self, batch):
        if self._data is None:
            forget, retain = batch.forget, batch.retain
        else:
            forget, retain = (sample_rows(rows, self.contrast_rows, self._generator, self._data.pad_id)
                              for rows in (self._data.forget, self._data.retain))
        if retain is None:
            raise UnlearnError("inner_attack 'rfa' contrasts forget with retain prompts; give retain data"
                               " or set inner_attack to 'pgd' or 'none'")
        device = batch.forget.input_ids.device
        return forget.to(device), retain.to(device)

    def _attack_rfa(self, model, batch):
        if self._directions is None or self._calls - self._directions_at >= self.refresh_every:
            self._directions = refusal_directions(model, *self._contrast_rows(batch), self.attacked_layers(model))
            self._directions_at = self._calls
        return ablate_directions(model, self._directions)

    def _attack_pgd(self, model, batch):
        deltas = latent_pgd(model, batch.forget, self.attacked_layers(model), self.pgd_radius, self.pgd_steps,
                            self.pgd_step_size)
        return add_to_outputs(model, deltas)

    def forget_loss(self, model, batch, ref):
        attacked = self.inner_attack != "none" and torch.rand((), generator=self._generator).item() < self.attack_prob
        attack = getattr(self, f"_attack_{self.inner_attack}")(model, batch) if attacked else contextlib.nullcontext()
        with attack:
            logp = sequence_logprob(model, batch.forget)  # (B,) summed
        tokens = shifted_labels(batch.forget.labels)[1].sum(-1).clamp(min=1)
        r_ref = self.beta * (logp - sequence_logprob(ref, batch.forget))
        r_free = self.beta * logp / tokens + self.gamma
        mix = MIX_RULES[self.mix](self, batch, ref)
        reward = mix * r_ref + (1 - mix) * r_free
        forget = (2 / self.beta) * F.softplus(reward).mean()
        return forget, {"reward": reward.mean(), "mix": torch.as_tensor(mix, dtype=torch.float32).mean(),
                        "attacked": torch.tensor(float(attacked))}
