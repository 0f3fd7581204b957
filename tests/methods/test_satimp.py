"""SatImp: β1 = β2 = 0 is gradient ascent, β2 = 0 is WGA, the weights by hand, the default γ/α (the
authors', not OpenUnlearning's YAML), and no reference model. Run: pytest tests/methods/test_satimp.py -q"""

from __future__ import annotations


import pytest
import torch

from unlearnkit.data.batch import IGNORE_INDEX, TokenBatch, UnlearnBatch
from unlearnkit.methods.grad_ascent import GradAscent
from unlearnkit.methods.satimp import SatImp
from unlearnkit.methods.wga import WGA
from unlearnkit.registry import METHODS


def grads(model, loss) -> list[torch.Tensor]:
    return [g.clone() for g in torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])]


def assert_same_objective(a, b, model) -> None:
    assert b.total.item() == pytest.approx(a.total.item(), abs=1e-6)
    for ga, gb in zip(grads(model, a.total), grads(model, b.total)):
        torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-7)


def test_both_exponents_zero_is_gradient_ascent(fitted_model, toy_batch):
    satimp = SatImp(beta1=0.0, beta2=0.0, forget_weight=1.0, retain_weight=0.0)
    assert_same_objective(GradAscent().loss(fitted_model, toy_batch, None), satimp.loss(fitted_model, toy_batch, None),
                          fitted_model)


@pytest.mark.parametrize("beta", [1.0, 5.0])
def test_importance_exponent_zero_is_wga(fitted_model, toy_batch, beta):
    satimp = SatImp(beta1=beta, beta2=0.0, forget_weight=1.0, retain_weight=0.0)
    assert_same_objective(WGA(beta=beta, retain_weight=0.0).loss(fitted_model, toy_batch, None),
                          satimp.loss(fitted_model, toy_batch, None), fitted_model)


def test_value_and_logit_gradient_by_hand(fixed_logits):
    # Positions 0 and 1 predict labels 2 and 0 (after the shift); p = softmax(z) = 0.5 and 0.9.
    z = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]]]))
    model = fixed_logits(z)
    ids = torch.tensor([[0, 2, 0]])
    batch = UnlearnBatch(TokenBatch(ids, torch.ones_like(ids), torch.tensor([[IGNORE_INDEX, 2, 0]])))
    out = SatImp(beta1=2.0, beta2=3.0, forget_weight=0.5, retain_weight=0.0).loss(model, batch, None)
    w = {2: 0.5 ** 2 * 0.5 ** 3, 0: 0.9 ** 2 * 0.1 ** 3}  # p^β1 (1 − p)^β2: the confident token weighs less
    expected_forget = (w[2] * torch.tensor(0.5).log() + w[0] * torch.tensor(0.9).log()) / 2
    assert out.parts["forget"].item() == pytest.approx(expected_forget.item(), abs=1e-6)
    assert out.parts["weight"].item() == pytest.approx((w[2] + w[0]) / 2, abs=1e-7)
    assert out.total.item() == pytest.approx(0.5 * expected_forget.item(), abs=1e-7)  # γ = 0.5
    (grad,) = torch.autograd.grad(out.total, [model.z])
    expected = torch.zeros(3, 3)  # stop-gradient weights: dL/dz = γ·w·(e_y − softmax(z)) / |A|
    for row, label in enumerate([2, 0]):
        expected[row] = 0.5 * w[label] * (torch.eye(3)[label] - z[0, row].exp()) / 2
    torch.testing.assert_close(grad[0], expected, rtol=1e-5, atol=1e-8)


def test_defaults_are_the_authors_weights_with_openunlearnings_exponents():
    # γ = 1, α = 0.1: the authors' satimp_gd and OpenUnlearning's README (its YAML swaps them)
    method = METHODS.build("satimp")
    assert (method.beta1, method.beta2, method.forget_weight, method.retain_weight) == (5.0, 1.0, 1.0, 0.1)


def test_no_reference_is_built(train_tiny, references):
    method = METHODS.build("satimp")
    assert method.needs_reference() is None and method.needs_retain()
    assert train_tiny(method, 2).stopped is None
    assert references == []  # OpenUnlearning's SatImp builds a reference copy it never reads
