"""ME+GD: the forget term is KL(U ‖ π), 0 exactly for a model whose predictions are uniform, and
positive otherwise; the retain term is plain NLL; it needs no reference model.
"""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.errors import UnlearnError
from unlearnkit.losses import nll
from unlearnkit.methods.me_gd import MEGD
from unlearnkit.model import LoraSpec, wrap_lora
from unlearnkit.registry import METHODS


def uniform(model):
    """`model` with a zero output projection: every logit 0, every prediction uniform over the vocabulary."""
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return model


def expected_kl(model, tokens, mask) -> float:
    """KL(U ‖ π) = Σ_v (1/V)·(log(1/V) − log π(v)), averaged over the masked next-token positions."""
    with torch.no_grad():
        logits = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).logits[:, :-1].double()
    logp = torch.log_softmax(logits, dim=-1)
    vocab = logits.shape[-1]
    per_position = ((1 / vocab) * (math.log(1 / vocab) - logp)).sum(-1)
    return per_position[mask].mean().item()


@pytest.mark.parametrize("positions", ["all", "answer"])
def test_the_forget_term_is_zero_for_a_uniform_model_and_positive_otherwise(positions, tiny_model, fitted_model,
                                                                           toy_batch):
    method = MEGD(positions=positions, retain_weight=0.0)
    assert fitted_model.lm_head.weight.abs().sum() > 0
    confident = method.loss(fitted_model, toy_batch, None).parts["forget"].item()
    assert confident > 0.5  # the fitted model is far from uniform on the forget answers
    assert method.loss(tiny_model, toy_batch, None).parts["forget"].item() > 0
    assert method.loss(uniform(fitted_model), toy_batch, None).parts["forget"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("positions", ["all", "answer"])
def test_the_forget_term_is_kl_from_uniform_over_the_chosen_positions(positions, fitted_model, toy_batch):
    forget = toy_batch.forget
    if positions == "all":
        mask = forget.attention_mask[:, 1:].bool()
    else:
        mask = forget.labels[:, 1:] != -100
    out = MEGD(positions=positions, retain_weight=0.0).loss(fitted_model, toy_batch, None)
    assert out.parts["forget"].item() == pytest.approx(expected_kl(fitted_model, forget, mask), rel=1e-5)
    assert out.total.item() == pytest.approx(0.1 * out.parts["forget"].item(), rel=1e-6)  # forget_weight 0.1


def test_the_two_position_sets_differ(fitted_model, toy_batch):
    values = [MEGD(positions=p).loss(fitted_model, toy_batch, None).parts["forget"].item() for p in ("all", "answer")]
    assert values[0] != pytest.approx(values[1], rel=1e-3)


def test_the_retain_term_is_nll_and_the_defaults_are_the_authors(fitted_model, toy_batch):
    method = METHODS.build("me_gd")
    defaults = (method.forget_weight, method.retain_weight, method.retain_loss, method.positions)
    assert defaults == (0.1, 1.0, "nll", "all")
    out = method.loss(fitted_model, toy_batch, None)
    assert out.parts["retain"].item() == pytest.approx(nll(fitted_model, toy_batch.retain).item(), rel=1e-6)
    assert out.total.item() == pytest.approx(0.1 * out.parts["forget"].item() + out.parts["retain"].item(), rel=1e-6)


def test_no_reference_is_built(train_tiny, references):
    assert METHODS.build("me_gd").needs_reference() is None
    assert train_tiny(METHODS.build("me_gd"), 1).stopped is None
    assert references == []  # neither a copy nor a log-prob cache


def test_a_kl_retain_term_needs_the_whole_reference():
    assert METHODS.build("me_gd", retain_loss="kl").needs_reference() == "model"


def test_trains_as_lora_with_only_adapters_moving(tiny_model, train_tiny, references):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    start = {n: p.detach().clone() for n, p in lora.named_parameters()}
    run = train_tiny(METHODS.build("me_gd"), steps=2, model=lora)
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, start[n])}
    assert run.stopped is None and changed and all("lora_" in n for n in changed)
    assert references == []


def test_unknown_positions_is_a_user_error():
    with pytest.raises(UnlearnError, match="positions must be one of all, answer, got 'prompt'"):
        METHODS.build("me_gd", positions="prompt")
