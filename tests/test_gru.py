"""Gradient rectification (`train.gru`): no conflict leaves the gradient unchanged, a conflict loses exactly its
component along the retain gradient — checked on synthetic gradients and in training with three bases."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from unlearnkit.data.pairing import UnlearnData, epoch_batches
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import METHODS
from unlearnkit.train.modifiers import rectify

ADAM_BETA1 = 0.9


def with_grads(forget: list[list[float]], retain: list[list[float]]):
    params = [nn.Parameter(torch.zeros(len(f))) for f in forget]
    for p, f, r in zip(params, forget, retain):
        p.grad = torch.tensor(f) + torch.tensor(r)
    return params, [torch.tensor(f) for f in forget]


def test_no_conflict_leaves_the_gradient_unchanged():
    params, forget = with_grads([[1.0, 0.0], [2.0]], [[1.0, 1.0], [0.5]])
    before = [p.grad.clone() for p in params]
    assert rectify(params, forget) > 0
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before))


def test_a_conflict_loses_exactly_its_component_along_the_retain_gradient():
    f, r = [[1.0, -2.0], [0.5]], [[-1.0, 1.0], [2.0]]
    params, forget = with_grads(f, r)
    dot = rectify(params, forget)
    gf, gr = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([-1.0, 1.0, 2.0])
    assert dot == pytest.approx(float(gf @ gr)) and dot < 0
    rectified = gf - (gf @ gr) / (gr @ gr) * gr
    got = torch.cat([p.grad for p in params])
    torch.testing.assert_close(got, rectified + gr)
    assert float((got - gr) @ gr) == pytest.approx(0.0, abs=1e-6)  # what is left of g_f is orthogonal to g_r


@pytest.mark.parametrize("name", ["grad_diff", "npo", "simnpo"])
def test_training_steps_with_the_rectified_gradient(name, fitted_model, toy_data, train_tiny, tmp_path):
    """From a model that knows the data, the forget and retain gradients conflict (grad_diff, npo) or not (simnpo)."""
    data = UnlearnData(toy_data.forget[:4], toy_data.retain[:4], pad_id=toy_data.pad_id)
    train_tiny(METHODS.build(name), 1, data=data, batch_size=4, gru=True, max_grad_norm=None, save_every=1,
               out_dir=tmp_path, model=fitted_model)
    state = load_file(str(tmp_path / "checkpoints" / "step-1" / "trainer_state.safetensors"))
    got = {k[len("optim."):-len(".exp_avg")]: v / (1 - ADAM_BETA1) for k, v in state.items() if k.endswith(".exp_avg")}

    from unlearnkit.train.reference import Reference

    method = METHODS.build(name)
    method.setup(data)
    model = copy.deepcopy(fitted_model)
    ref = Reference.from_model(fitted_model) if method.needs_reference() else None
    batch = next(epoch_batches(data, 4, 0, 0))
    forget_term, retain_term = method.loss_terms(model, batch, ref)
    params = list(model.parameters())
    gf = torch.cat([g.flatten() for g in torch.autograd.grad(forget_term().total, params)])
    gr = torch.cat([g.flatten() for g in torch.autograd.grad(retain_term().total, params)])
    dot = gf @ gr
    assert (float(dot) < 0) == (name != "simnpo")  # the rectification path runs for the conflicting bases
    expected = (gf - min(0.0, float(dot)) / float(gr @ gr) * gr) + gr
    flat = torch.cat([got[n].flatten() for n, _ in model.named_parameters()])
    torch.testing.assert_close(flat, expected, atol=1e-6, rtol=1e-4)


def test_gru_needs_a_retain_term_and_no_accumulation(train_tiny):
    with pytest.raises(UnlearnError, match="train.gru rectifies .* grad_ascent has no retain term"):
        train_tiny(METHODS.build("grad_ascent"), 1, gru=True)
    with pytest.raises(UnlearnError, match="train.gru needs train.grad_accum=1"):
        train_tiny(METHODS.build("grad_diff"), 1, gru=True, grad_accum=2)
