"""Exact identities of the method objectives (no tolerances beyond float rounding).

At the start of training the model equals its reference, so every log-ratio is 0:
NPO and DPO forget terms are (2/β)·log 2 and the KL retain term is 0. GD with retain weight 0 is
GA; IDK with retain weight 0 is the NLL of the IDK view; SimNPO on a model whose every token has
NLL log V is −(2/β)·log σ(β·(log V − δ)).
"""

from __future__ import annotations

import dataclasses

import math

import pytest
import torch

from unlearnkit.errors import UnlearnError
from unlearnkit.losses import nll
from unlearnkit.methods.base import ModelEdit, RetainRegularised
from unlearnkit.methods.dpo import DPO
from unlearnkit.methods.grad_ascent import GradAscent
from unlearnkit.methods.grad_diff import GradDiff
from unlearnkit.methods.idk import IDK
from unlearnkit.methods.npo import NPO
from unlearnkit.methods.simnpo import SimNPO
from unlearnkit.train.reference import Reference
from unlearnkit.registry import METHODS


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_npo_forget_term_is_two_over_beta_log2_when_reference_is_the_model(tiny_model, toy_batch, beta):
    ref = Reference.from_model(tiny_model)
    out = NPO(beta=beta, retain_weight=0.0).loss(tiny_model, toy_batch, ref)
    assert out.parts["forget"].item() == pytest.approx(2 / beta * math.log(2), abs=1e-5)
    assert out.parts["log_ratio"].item() == pytest.approx(0.0, abs=1e-5)
    assert out.total.item() == pytest.approx(2 / beta * math.log(2), abs=1e-5)


def test_npo_forget_term_with_a_cached_reference_after_release(tiny_model, toy_data, toy_batch):
    # The trainer precomputes reference log-probs on differently padded batches, then drops the copy.
    from unlearnkit.data.batch import collate

    ref = Reference.from_model(tiny_model)
    ref.precompute([collate(toy_data.forget, toy_data.pad_id)])
    ref.release()
    out = NPO(beta=0.1, retain_weight=0.0).loss(tiny_model, toy_batch, ref)
    assert out.parts["forget"].item() == pytest.approx(20 * math.log(2), abs=1e-4)
    assert (ref.misses, ref.hits) == (1, 1)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_forget_term_is_two_over_beta_log2_at_start(tiny_model, toy_batch, beta):
    ref = Reference.from_model(tiny_model)
    out = DPO(beta=beta, retain_weight=0.0).loss(tiny_model, toy_batch, ref)
    assert out.parts["forget"].item() == pytest.approx(2 / beta * math.log(2), abs=1e-5)
    assert out.parts["margin"].item() == pytest.approx(0.0, abs=1e-6)


def test_grad_diff_with_retain_weight_zero_is_grad_ascent(tiny_model, toy_batch):
    ga = GradAscent().loss(tiny_model, toy_batch, None)
    gd = GradDiff(retain_weight=0.0).loss(tiny_model, toy_batch, None)
    assert gd.total.item() == pytest.approx(ga.total.item(), abs=1e-7)
    assert ga.total.item() == pytest.approx(-nll(tiny_model, toy_batch.forget).item(), abs=1e-7)
    assert gd.parts["retain"].item() > 0  # the retain term exists, it is just weighted 0
    grads = []
    for out in (ga, gd):
        tiny_model.zero_grad()
        out.total.backward()
        grads.append([p.grad.clone() for p in tiny_model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("beta,delta", [(4.5, 0.0), (2.5, 1.0)])
def test_simnpo_forget_term_from_a_known_mean_nll(uniform_model, toy_batch, beta, delta):
    vocab = 64
    mean_nll = math.log(vocab)  # the same for every row, whatever its length
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-beta * (mean_nll - delta))))
    out = SimNPO(beta=beta, delta=delta, retain_weight=0.0).loss(uniform_model(vocab), toy_batch, None)
    assert out.parts["forget_mean_nll"].item() == pytest.approx(mean_nll, abs=1e-6)
    assert out.parts["forget"].item() == pytest.approx(expected, abs=1e-6)
    assert out.total.item() == pytest.approx(0.125 * expected, abs=1e-6)  # forget_weight default 0.125


def test_idk_with_retain_weight_zero_is_the_nll_of_the_idk_view(tiny_model, toy_batch):
    out = IDK(retain_weight=0.0).loss(tiny_model, toy_batch, None)
    assert out.total.item() == pytest.approx(nll(tiny_model, toy_batch.extra["idk"]).item(), abs=1e-7)
    assert out.total.item() != pytest.approx(nll(tiny_model, toy_batch.forget).item(), abs=1e-3)


# every registered forget-term + retain-term method (from the registry: a new one is tested without an edit here)
RETAIN_REGULARISED = [n for n in METHODS.names() if issubclass(METHODS.get(n), RetainRegularised)]


@pytest.mark.parametrize("name", RETAIN_REGULARISED)
def test_kl_retain_term_is_zero_at_start(name, tiny_model, toy_data, toy_batch):
    method = METHODS.build(name, retain_loss="kl")
    method.prepare(tiny_model)
    method.setup(dataclasses.replace(toy_data, extra=dict(toy_data.extra)))  # as the trainer: after prepare
    assert method.needs_reference() == "model"  # KL needs full reference outputs, not cached log-probs
    out = method.loss(tiny_model, toy_batch, Reference.from_model(tiny_model))
    assert out.parts["retain"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", RETAIN_REGULARISED)
def test_unknown_retain_loss_is_a_user_error(name):
    with pytest.raises(UnlearnError, match="retain_loss.*nll, kl.*'mse'"):
        METHODS.get(name)(retain_loss="mse")


def test_unknown_retain_loss_through_the_registry_is_a_user_error():
    with pytest.raises(UnlearnError, match="retain_loss"):
        METHODS.build("npo", retain_loss="mse")


@pytest.mark.parametrize("name", [n for n in METHODS.names() if not issubclass(METHODS.get(n), ModelEdit)])
def test_loss_terms_sum_to_the_loss_and_its_gradient(name, fitted_model, toy_batch, toy_data):
    """The trainer backpropagates `loss_terms` one at a time; their sum must be `loss` exactly, in
    value and in gradient (this is what lets the retain term's graph wait for the forget term's)."""
    method = METHODS.build(name)
    method.prepare(fitted_model)  # methods that add modules (GRUN's edit) create them here
    ref = Reference.from_model(fitted_model) if method.needs_reference() else None
    params = [p for p in fitted_model.parameters() if p.requires_grad]

    data = dataclasses.replace(toy_data, extra=dict(toy_data.extra))  # setup may add views (AltPO, ELM): not to the fixture
    method.setup(data)  # a run's fresh state (ERU: its RNG draws the same inner attack both times)
    whole = method.loss(fitted_model, toy_batch, ref)
    whole_grads = torch.autograd.grad(whole.total, params, allow_unused=True)

    method.setup(data)
    terms = [term() for term in method.loss_terms(fitted_model, toy_batch, ref)]
    assert len(terms) == (2 if method.needs_retain() else 1)
    term_total = sum(t.total for t in terms)
    term_grads = torch.autograd.grad(term_total, params, allow_unused=True)

    assert term_total.item() == pytest.approx(whole.total.item(), rel=1e-6, abs=1e-6)
    for g_whole, g_terms in zip(whole_grads, term_grads):
        if g_whole is None:
            assert g_terms is None or torch.count_nonzero(g_terms) == 0
        else:
            torch.testing.assert_close(g_terms, g_whole, rtol=1e-5, atol=1e-7)
