"""RMU: Representation Misdirection for Unlearning (Li et al., 2024, "The WMDP Benchmark", arXiv:2403.03218).

Forget activations at one decoder block are pushed toward a fixed random direction (scrambling
what later blocks read from them), while retain activations are pinned to the frozen model's.
With h_ℓ the output of decoder block ℓ (Hugging Face ``hidden_states[ℓ + 1]``, specs pitfall 24),
u ~ U[0, 1)^d drawn once from a generator seeded with `seed` and normalised to ‖u‖ = 1:

    L = MSE(h_ℓ(x_f), c·u) + α · MSE(h_ℓ(x_r), h_ℓ^frozen(x_r))

MSE is the mean over real (attention-masked) tokens and hidden dims; c = `steering_coeff`,
α = `retain_weight`. Only the MLP down-projections of `train_layers` are trained (the original's
`param_ids = [6]` of `layer_ids`), or, on a LoRA model, only their adapters. At the start the
retain term is 0 (the model is its reference).

`layer` and `train_layers` take block indices (ints) or fractions of depth (floats, see
`hooks.resolve_layers`); the defaults give zephyr's 7 and 5, 6, 7 on a 32-block model and blocks
1 and 0, 1 of the 4-block tiny world. Presets from the seeds (specs/methods.md §1.9):

    zephyr-7b-β (WMDP argparse defaults): layer 7,  train_layers [5, 6, 7],    c 20, α 100, lr 5e-5
    Llama-3.1-8B (GRUN README):            layer 15, train_layers [13, 14, 15], c 30, α 350, lr 5e-5
    (lr 5e-5 = train.lr 5e-6 with the default lr_scale 10)

`lr_scale` multiplies the recipe's train.lr for the down-projections: RMU moves a few matrices, and
its seeds train them at 5e-5 on 7B models where full fine-tuning baselines use 5e-6–1e-5 (about 10×).
With scale 1 on the tiny world's default recipe (lr 5e-4) the forget probability barely moves; 10
gives 5e-3 there and, with a real recipe's train.lr 5e-6, the seeds' 5e-5.

Picking c: ‖c·u‖ = c, so c is measured against ‖h_ℓ‖, the norm of the block's output on forget
tokens; a few times ‖h_ℓ‖ is the starting point, larger c forgets more and costs more utility.
On the tiny world (‖h_1‖ ≈ 96, α 30) c = 100 / 300 / 600 gave forget probability 0.67 / 0.36 /
0.26 and model utility 0.921 / 0.918 / 0.905; the defaults (c 300, α 30, 10 × 5e-4) are those
runs' middle. docs/methods/rmu-and-eru.md shows how to measure ‖h_ℓ‖ for another model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import capture_outputs, decoder_layers, hidden_size, mlp_down_projection, resolve_layers
from unlearnkit.losses import masked_mse
from unlearnkit.methods.base import Layer, LossOutput, UnlearningMethod
from unlearnkit.train.reference import is_peft_model
from unlearnkit.registry import METHODS, NonNegative, Positive, Seed


@METHODS.register("rmu")
@dataclass
class RMU(UnlearningMethod):
    """Steer forget activations at one layer toward a random direction; keep retain activations."""

    steering_coeff: Positive = 300.0
    retain_weight: NonNegative = 30.0
    layer: Layer = 0.23  # zephyr's 7 of 32 blocks; block 1 of the 4-layer tiny world
    train_layers: Annotated[tuple[Layer, ...], Field(min_length=1)] = (0.16, 0.2, 0.23)  # zephyr's 5, 6, 7; blocks 0, 1 of 4
    seed: Seed = 0  # for the random direction u
    lr_scale: Positive = 10.0  # the down-projections train at lr_scale × train.lr
    reference = "model"  # frozen block outputs on retain data
    uses_retain: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.steering_coeff <= 0:
            raise UnlearnError(f"steering_coeff must be > 0, got {self.steering_coeff}; pick a few times the"
                               " norm of the layer's activations (see the rmu docstring)")
        if self.retain_weight < 0:
            raise UnlearnError(f"retain_weight must be >= 0, got {self.retain_weight}")
        if not self.lr_scale > 0:
            raise UnlearnError(f"lr_scale must be > 0, got {self.lr_scale}; the seeds train RMU at ~10x a fine-tune's lr")

    def steering_layer(self, model) -> int:
        return resolve_layers(self.layer, len(decoder_layers(model)), field="layer")[0]

    def trained_layers(self, model) -> list[int]:
        layers = resolve_layers(self.train_layers, len(decoder_layers(model)), field="train_layers")
        steer = self.steering_layer(model)
        if any(index > steer for index in layers):
            raise UnlearnError(f"train_layers resolve to {layers} on this model but the steering layer is {steer};"
                               " blocks after it cannot change its output: use layers at or below `layer`")
        return layers

    def prepare(self, model):
        params = []
        for index in self.trained_layers(model):
            module = mlp_down_projection(model, index)
            if is_peft_model(model):
                adapters = [p for name, p in module.named_parameters() if "lora_" in name]
                if not adapters:
                    raise UnlearnError(f"rmu trains the LoRA adapters of the MLP down-projections, but layer {index}'s"
                                       " has none; add it to model.lora.target_modules (e.g. 'down_proj')")
                params += adapters
            else:
                params.append(module.weight)
        return [{"params": params, "lr_scale": self.lr_scale}]

    def control_vector(self, model) -> torch.Tensor:
        """c·u, (d,): u ~ U[0, 1)^d from a generator seeded with `seed`, normalised."""
        generator = torch.Generator().manual_seed(self.seed)
        u = torch.rand(hidden_size(model), generator=generator)
        return self.steering_coeff * u / u.norm()

    def _block_output(self, model, batch, layer: int) -> torch.Tensor:
        with capture_outputs(model, [layer]) as captured:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return captured[layer]

    def forget_term(self, model, batch) -> torch.Tensor:
        layer = self.steering_layer(model)
        hidden = self._block_output(model, batch.forget, layer)  # (B, T, d)
        target = self.control_vector(model).to(hidden.device)
        return masked_mse(hidden, target, batch.forget.attention_mask)

    def retain_term(self, model, batch, ref) -> torch.Tensor:
        if batch.retain is None:
            return batch.forget.input_ids.new_zeros((), dtype=torch.float32)
        layer = self.steering_layer(model)
        hidden = self._block_output(model, batch.retain, layer)
        frozen = ref.hidden_states(batch.retain, [layer])[layer]
        return masked_mse(hidden, frozen, batch.retain.attention_mask)

    def loss(self, model, batch, ref) -> LossOutput:
        forget = self.forget_term(model, batch)
        retain = self.retain_term(model, batch, ref)
        return LossOutput(forget + self.retain_weight * retain, {"forget": forget, "retain": retain})

    def loss_terms(self, model, batch, ref):
        def forget_term() -> LossOutput:
            forget = self.forget_term(model, batch)
            return LossOutput(forget, {"forget": forget})

        def retain_term() -> LossOutput:
            retain = self.retain_term(model, batch, ref)
            return LossOutput(self.retain_weight * retain, {"retain": retain})

        return [forget_term] + ([retain_term] if batch.retain is not None and self.retain_weight != 0 else [])
