"""WGA: β = 0 is gradient ascent; the weight sg(p)^β scales each token's gradient and is itself not
differentiated; no reference model is built. Run: pytest tests/methods/test_wga.py -q"""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.data.batch import IGNORE_INDEX
from unlearnkit.losses import nll
from unlearnkit.methods.grad_ascent import GradAscent
from unlearnkit.methods.wga import WGA
from unlearnkit.registry import METHODS


def grads(model, loss) -> list[torch.Tensor]:
    return [g.clone() for g in torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])]


def test_beta_zero_is_gradient_ascent_in_value_and_gradient(fitted_model, toy_batch):
    ga = GradAscent().loss(fitted_model, toy_batch, None)
    wga = WGA(beta=0.0, retain_weight=0.0).loss(fitted_model, toy_batch, None)
    assert wga.total.item() == pytest.approx(ga.total.item(), abs=1e-6)
    assert wga.total.item() == pytest.approx(-nll(fitted_model, toy_batch.forget).item(), abs=1e-6)
    assert wga.parts["weight"].item() == 1.0
    for a, b in zip(grads(fitted_model, ga.total), grads(fitted_model, wga.total)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_beta_one_scales_each_token_by_its_probability(fitted_model, toy_batch):
    ga = GradAscent().loss(fitted_model, toy_batch, None)
    wga = WGA(beta=1.0, retain_weight=0.0).loss(fitted_model, toy_batch, None)
    assert 0 < wga.parts["weight"].item() < 1
    assert abs(wga.total.item()) < abs(ga.total.item())  # every weight is below 1
    assert not torch.allclose(grads(fitted_model, ga.total)[0], grads(fitted_model, wga.total)[0])


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_value_and_logit_gradient_by_hand(fixed_logits, one_row, beta):
    # Positions 0 and 1 predict labels 2 and 0 (after the shift); p = softmax(z).
    z = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [1 / 3, 1 / 3, 1 / 3]]]))
    model = fixed_logits(z)
    out = WGA(beta=beta, retain_weight=0.0).loss(model, one_row([IGNORE_INDEX, 2, 0]), None)
    p = torch.tensor([0.5, 0.6])
    assert out.parts["forget"].item() == pytest.approx((p ** beta * p.log()).mean().item(), abs=1e-6)
    (grad,) = torch.autograd.grad(out.total, [model.z])
    # the weight is a constant (stop-gradient): dL/dz = w·(e_y − softmax(z)) / |A| at each answer position
    expected = torch.zeros(3, 3)
    for row, (label, prob) in enumerate([(2, 0.5), (0, 0.6)]):
        expected[row] = prob ** beta * (torch.eye(3)[label] - z[0, row].exp()) / 2
    torch.testing.assert_close(grad[0], expected, rtol=1e-5, atol=1e-7)
    assert math.isfinite(out.parts["forget_nll"].item())


def test_no_reference_is_built(train_tiny, references):
    method = METHODS.build("wga")
    assert method.needs_reference() is None and method.needs_retain()
    assert train_tiny(method, 2).stopped is None
    assert references == []  # OpenUnlearning's WGA builds a reference copy it never reads
