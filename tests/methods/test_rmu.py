"""RMU: what it trains, its two terms at the start, and its layer conventions.

At the start the model is its reference, so the retain term is exactly 0 and the forget term is
the masked MSE between block ℓ's output (Hugging Face hidden_states[ℓ + 1]) and c·u.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnkit.errors import UnlearnError
from unlearnkit.methods.rmu import RMU
from unlearnkit.model import LoraSpec, wrap_lora
from unlearnkit.train.reference import Reference
from unlearnkit.registry import METHODS
from unlearnkit.train import freeze_except


def prepared(method, model) -> list[nn.Parameter]:
    return [p for group in method.prepare(model) for p in group["params"]]


def names_of(model, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_prepare_returns_only_the_down_projections_of_the_train_layers(tiny_model):
    method = RMU(layer=1, train_layers=(0, 1))
    assert names_of(tiny_model, prepared(method, tiny_model)) == {
        "model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    assert names_of(tiny_model, prepared(RMU(), tiny_model)) == {"model.layers.0.mlp.down_proj.weight"}
    assert method.prepare(tiny_model)[0]["lr_scale"] == 10.0  # the seeds' ~10x a fine-tune's lr
    from unlearnkit.train.loop import _param_groups

    assert _param_groups(RMU(lr_scale=3.0).prepare(tiny_model), 1e-4)[0]["lr"] == pytest.approx(3e-4)


def test_training_changes_only_the_down_projections(fitted_model, train_tiny):
    start = {n: p.detach().clone() for n, p in fitted_model.named_parameters()}
    run = train_tiny(RMU(layer=1, train_layers=(0, 1)), steps=5, model=fitted_model)
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, start[n])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


def test_the_retain_term_is_zero_at_the_start(tiny_model, toy_batch):
    out = RMU(layer=1, train_layers=(0, 1)).loss(tiny_model, toy_batch, Reference.from_model(tiny_model))
    assert out.parts["retain"].item() == 0.0
    assert out.total.item() == out.parts["forget"].item()


@pytest.mark.parametrize("layer", [0, 1])
def test_the_forget_term_at_the_start_is_the_masked_mse_to_c_u(toy_batch, layer):
    from unlearnkit.model import tiny_llama

    model = tiny_llama(vocab_size=64, hidden=32, layers=3, heads=2, seed=1).eval()  # ℓ + 1 is not the last state
    coeff, seed = 7.0, 3
    method = RMU(steering_coeff=coeff, layer=layer, train_layers=(0,), seed=seed)
    out = method.loss(model, toy_batch, Reference.from_model(model))

    u = torch.rand(32, generator=torch.Generator().manual_seed(seed))
    target = coeff * u / u.norm()
    forget = toy_batch.forget
    with torch.no_grad():
        hidden = model(input_ids=forget.input_ids, attention_mask=forget.attention_mask,
                       output_hidden_states=True).hidden_states[layer + 1]  # the output of block ℓ
    mask = forget.attention_mask.bool()
    expected = ((hidden[mask] - target) ** 2).mean()
    assert out.parts["forget"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_control_vector_is_fixed_nonnegative_and_of_norm_c(tiny_model):
    method = RMU(steering_coeff=20.0, seed=1)
    first, second = method.control_vector(tiny_model), method.control_vector(tiny_model)
    assert torch.equal(first, second) and (first >= 0).all()
    assert first.norm().item() == pytest.approx(20.0, rel=1e-6)
    assert not torch.equal(first, RMU(steering_coeff=20.0, seed=2).control_vector(tiny_model))


def test_loss_terms_add_up_to_the_loss(fitted_model, tiny_model, toy_batch):
    method = RMU(layer=1, train_layers=(0, 1), retain_weight=3.0)
    ref = Reference.from_model(tiny_model)  # a different reference: the retain term is not 0
    total = method.loss(fitted_model, toy_batch, ref)
    terms = [term() for term in method.loss_terms(fitted_model, toy_batch, ref)]
    assert len(terms) == 2 and terms[1].parts["retain"].item() > 0
    assert sum(t.total.item() for t in terms) == pytest.approx(total.total.item(), rel=1e-6)


def test_fractions_of_depth_give_the_zephyr_layers_on_32_blocks_and_blocks_0_1_on_the_tiny_world():
    def stack(n_layers):
        model = nn.Module()
        model.model = nn.Module()
        model.model.layers = nn.ModuleList(nn.Identity() for _ in range(n_layers))
        return model

    assert (RMU().steering_layer(stack(32)), RMU().trained_layers(stack(32))) == (7, [5, 6, 7])
    assert (RMU().steering_layer(stack(4)), RMU().trained_layers(stack(4))) == (1, [0, 1])


def test_train_layers_after_the_steering_layer_are_a_user_error(tiny_model):
    with pytest.raises(UnlearnError, match="train_layers"):
        RMU(layer=0, train_layers=(0, 1)).prepare(tiny_model)


def test_an_unknown_block_layout_is_a_user_error():
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList([nn.Linear(4, 4)])
    with pytest.raises(UnlearnError, match="down-projection"):
        RMU(layer=0, train_layers=(0,)).prepare(model)


def test_lora_trains_only_the_down_projection_adapters(tiny_model, train_tiny):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    method = RMU(layer=1, train_layers=(0, 1))
    names = names_of(lora, prepared(method, lora))
    assert names and all("down_proj.lora_" in n for n in names) and len(names) == 4  # A and B of two layers

    start = {n: p.detach().clone() for n, p in lora.named_parameters()}
    run = train_tiny(method, steps=2, model=lora)
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, start[n])}
    assert changed and changed <= names


def test_lora_without_a_down_projection_adapter_is_a_user_error(tiny_model):
    lora = wrap_lora(tiny_model, LoraSpec(r=4, target_modules=["q_proj"]))
    with pytest.raises(UnlearnError, match="target_modules"):
        RMU().prepare(lora)


def test_the_lora_reference_shares_weights(tiny_model, toy_batch):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    method = RMU(layer=1, train_layers=(0, 1))
    freeze_except(lora, prepared(method, lora))
    ref = Reference.from_model(lora)
    assert ref.shares_weights
    assert method.loss(lora, toy_batch, ref).parts["retain"].item() == 0.0


@pytest.mark.parametrize("field, value", [("steering_coeff", 0.0), ("retain_weight", -1.0), ("layer", 2.5)])
def test_bad_values_are_user_errors(field, value, tiny_model):
    with pytest.raises(UnlearnError, match=field):
        METHODS.build("rmu", **{field: value}).prepare(tiny_model)
