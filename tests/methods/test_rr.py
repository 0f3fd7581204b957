"""RR (circuit breakers): its two terms at the start and against another reference, its schedule, what it
trains, and the one reference it builds (a frozen copy, or the adapters-off model under LoRA).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.errors import UnlearnError
from unlearnkit.methods.rr import RR
from unlearnkit.model import LoraSpec, tiny_llama, wrap_lora
from unlearnkit.registry import METHODS
from unlearnkit.train import freeze_except
from unlearnkit.train.reference import Reference


def names_of(model, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def prepared(method, model) -> list[nn.Parameter]:
    return [p for group in method.prepare(model) for p in group["params"]]


def test_at_the_start_the_retain_term_is_zero_and_every_cosine_is_one(tiny_model, toy_batch):
    out = RR().loss(tiny_model, toy_batch, Reference.from_model(tiny_model))
    assert out.parts["retain"].item() == 0.0
    assert out.parts["forget"].item() == pytest.approx(1.0, abs=1e-6)


def test_the_lora_reference_shares_weights_and_gives_the_same_start(tiny_model, toy_batch):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    method = RR()
    freeze_except(lora, prepared(method, lora))
    ref = Reference.from_model(lora)
    assert ref.shares_weights
    out = method.loss(lora, toy_batch, ref)
    assert out.parts["retain"].item() == 0.0
    assert out.parts["forget"].item() == pytest.approx(1.0, abs=1e-6)


def test_both_terms_by_hand_against_another_reference(toy_batch):
    # 3 blocks, layers 0 and 1: hidden_states[1] and [2] are block outputs (the last one is after the final norm)
    start = tiny_llama(vocab_size=64, hidden=32, layers=3, heads=2, seed=1).eval()
    moved = tiny_llama(vocab_size=64, hidden=32, layers=3, heads=2, seed=2).eval()
    out = RR(layers=(0, 1)).loss(moved, toy_batch, Reference.from_model(start))

    def states(model, tokens):
        with torch.no_grad():
            return model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                         output_hidden_states=True).hidden_states

    forget, retain = toy_batch.forget, toy_batch.retain
    f_mask, r_mask = forget.attention_mask.bool(), retain.attention_mask.bool()
    ours, theirs = states(moved, forget), states(start, forget)
    cosines = torch.cat([F.cosine_similarity(ours[k + 1][f_mask], theirs[k + 1][f_mask], dim=-1) for k in (0, 1)])
    ours, theirs = states(moved, retain), states(start, retain)
    distances = torch.cat([(ours[k + 1][r_mask] - theirs[k + 1][r_mask]).norm(dim=-1) for k in (0, 1)])
    assert out.parts["forget"].item() == pytest.approx(cosines.clamp(min=0).mean().item(), rel=1e-5)
    assert out.parts["retain"].item() == pytest.approx(distances.mean().item(), rel=1e-5)
    assert (cosines < 0).any() and (cosines > 0).any()  # the ReLU matters on this pair


def test_the_coefficients_follow_the_papers_schedule_and_setup_restarts_it(tiny_model, toy_batch, toy_data):
    method = RR(alpha=10.0, schedule_steps=4)
    ref = Reference.from_model(tiny_model)
    seen = []
    for _ in range(10):  # one loss per optimizer step, as the trainer calls them
        out = method.loss(tiny_model, toy_batch, ref)
        seen.append((round(out.parts["forget_coeff"].item(), 6), round(out.parts["retain_coeff"].item(), 6)))
        method.after_step({})
    # t = 1..10, p = min(1, t/8): c_rr = 10(1 − p), c_ret = 10p
    assert seen[0] == (8.75, 1.25) and seen[3] == (5.0, 5.0) and seen[7] == (0.0, 10.0) and seen[9] == (0.0, 10.0)
    method.setup(toy_data)  # t = 1 again: the coefficients of the first step
    assert method.coefficients() == (8.75, 1.25)
    terms = method.loss_terms(tiny_model, toy_batch, ref)  # one batch: one t for both terms
    method.loss(tiny_model, toy_batch, ref)  # a second micro-batch (or SAM's second loss) of the same step
    assert method.coefficients() == (8.75, 1.25) and len(terms) == 2  # t is the step, not the loss call
    method.after_step({})
    assert method.coefficients() == (7.5, 2.5)


def test_fractions_of_depth_give_the_papers_blocks_on_32_and_blocks_1_2_on_4():
    def stack(n_layers):
        model = nn.Module()
        model.model = nn.Module()
        model.model.layers = nn.ModuleList(nn.Identity() for _ in range(n_layers))
        return model

    assert RR().rerouted_layers(stack(32)) == [9, 19]  # the paper's hidden_states 10 and 20
    assert RR().rerouted_layers(stack(4)) == [1, 2]


def test_prepare_returns_the_blocks_up_to_the_deepest_layer_at_ten_times_the_lr(tiny_model):
    model = tiny_llama(vocab_size=64, hidden=32, layers=4, heads=2, seed=0)
    (group,) = RR().prepare(model)
    assert group["lr_scale"] == 10.0
    names = names_of(model, group["params"])  # blocks 1 and 2: blocks 0..2 train
    assert names and all(n.startswith(("model.layers.0.", "model.layers.1.", "model.layers.2.")) for n in names)
    assert {n for n, _ in model.named_parameters() if n.startswith("model.layers.2.")} <= names
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    assert all("lora_" in n for n in names_of(lora, prepared(RR(layers=(0,)), lora)))


def test_a_lora_model_without_adapters_in_those_blocks_is_a_user_error(tiny_model):
    lora = wrap_lora(tiny_model, LoraSpec(r=4, target_modules=["lm_head"]))
    with pytest.raises(UnlearnError, match="target_modules"):
        RR().prepare(lora)


def test_the_trainer_builds_one_frozen_copy(tiny_model, train_tiny, references):
    assert METHODS.build("rr").needs_reference() == "model"
    run = train_tiny(METHODS.build("rr"), 2)
    (ref,) = references
    assert not ref.shares_weights and ref.model is not run.model
    assert (ref.hits, ref.misses) == (0, 0)  # no log-prob cache: only hidden states
    torch.testing.assert_close(ref.model.model.layers[0].mlp.down_proj.weight,
                               tiny_model.model.layers[0].mlp.down_proj.weight, atol=0, rtol=0)


def test_lora_trains_only_adapters_against_the_adapters_off_model(tiny_model, train_tiny, references):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    start = {n: p.detach().clone() for n, p in lora.named_parameters()}
    run = train_tiny(METHODS.build("rr"), steps=2, model=lora)  # the 0-distance retain term at step 1 stays finite
    (ref,) = references
    assert ref.shares_weights and ref.model is run.model  # no second copy of the weights
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, start[n])}
    assert run.stopped is None and changed and all("lora_" in n for n in changed)
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)


@pytest.mark.parametrize("field, value", [("alpha", 0.0), ("lr_scale", 0.0), ("schedule_steps", 0), ("layers", (1.5,)),
                                          ("layers", ())])
def test_bad_values_are_user_errors(field, value):
    with pytest.raises(UnlearnError, match=field):
        METHODS.build("rr", **{field: value})
