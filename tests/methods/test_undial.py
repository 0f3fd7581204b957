"""UNDIAL: zero gradient at the start with β = 0, the adjusted teacher by hand on answer positions only,
no retain rows with α = 0, and the adapters-off model as the teacher under LoRA.
Run: pytest tests/methods/test_undial.py -q"""

from __future__ import annotations


import pytest
import torch

from unlearnkit.data.batch import IGNORE_INDEX, TokenBatch, UnlearnBatch
from unlearnkit.losses import logits_of
from unlearnkit.methods.undial import UNDIAL
from unlearnkit.model import LoraSpec, wrap_lora
from unlearnkit.registry import METHODS
from unlearnkit.train.reference import Reference


def test_beta_zero_has_zero_gradient_at_the_start(fitted_model, toy_batch):
    params = [p for p in fitted_model.parameters() if p.requires_grad]
    ref = Reference.from_model(fitted_model)
    out = UNDIAL(beta=0.0).loss(fitted_model, toy_batch, ref)
    assert out.total.item() > 0  # the entropy of the model at the answer positions, not 0
    for grad in torch.autograd.grad(out.total, params):
        assert grad.abs().max().item() < 1e-6
    pushed = UNDIAL(beta=10.0).loss(fitted_model, toy_batch, ref)  # β > 0: the same start does move
    assert max(g.abs().max().item() for g in torch.autograd.grad(pushed.total, params)) > 1e-3


def test_teacher_lowers_only_the_answer_token_at_answer_positions(fixed_logits):
    # Positions 0..3; labels [-100, -100, 2, 0]: positions 1 and 2 predict answer tokens 2 and 0.
    torch.manual_seed(0)
    z = torch.randn(1, 4, 5)
    model = fixed_logits(z)
    ids = torch.tensor([[3, 4, 2, 0]])
    batch = UnlearnBatch(TokenBatch(ids, torch.ones_like(ids), torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, 0]])))
    beta = 3.0
    out = UNDIAL(beta=beta).loss(model, batch, Reference.from_model(model))
    (grad,) = torch.autograd.grad(out.total, [model.z])
    for position, label in [(1, 2), (2, 0)]:  # dL/dz = (softmax(z) − softmax(z − β e_y)) / |A|
        q = (z[0, position] - beta * torch.eye(5)[label]).softmax(-1)
        torch.testing.assert_close(grad[0, position], (z[0, position].softmax(-1) - q) / 2, rtol=1e-5, atol=1e-7)
        assert grad[0, position, label] > 0  # the answer token is pushed down
    # prompt and last positions carry no loss (OpenUnlearning's lowers token V − 100 there and averages over them)
    assert torch.count_nonzero(grad[0, 0]) == 0 and torch.count_nonzero(grad[0, 3]) == 0
    expected = sum(-((z[0, t] - beta * torch.eye(5)[y]).softmax(-1) * z[0, t].log_softmax(-1)).sum()
                   for t, y in [(1, 2), (2, 0)]) / 2
    assert out.total.item() == pytest.approx(expected.item(), abs=1e-6)


def test_alpha_zero_pairs_no_retain_rows_and_alpha_one_does(train_tiny, references):
    seen = []

    class Recording(UNDIAL):
        def forget_loss(self, model, batch, ref):
            seen.append(batch.retain)
            return super().forget_loss(model, batch, ref)

    assert METHODS.build("undial").needs_reference() == "model" and not METHODS.build("undial").needs_retain()
    assert train_tiny(Recording(), 2).stopped is None
    assert seen == [None, None]
    seen.clear()
    assert train_tiny(Recording(retain_weight=1.0), 1).stopped is None
    assert seen[0] is not None
    assert len(references) == 2 and not references[0].shares_weights  # full training: a frozen copy


def test_lora_teacher_is_the_adapters_off_model(tiny_model, toy_batch, train_tiny, references):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    start = {n: p.detach().clone() for n, p in lora.named_parameters()}
    run = train_tiny(METHODS.build("undial"), 2, model=lora)
    assert run.stopped is None
    (ref,) = references
    assert ref.shares_weights and ref.model is run.model  # no second copy of the weights
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, start[n])}
    assert changed and all("lora_" in n for n in changed)
    with torch.no_grad():  # the teacher is the starting model, while the adapted model has moved
        base = logits_of(tiny_model, toy_batch.forget)
        torch.testing.assert_close(ref.logits(toy_batch.forget), base, atol=1e-5, rtol=0)
        assert not torch.allclose(logits_of(run.model, toy_batch.forget), base, atol=1e-5)
