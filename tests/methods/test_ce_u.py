"""CE-U: a hand-computed loss and logit gradient on a 3-token vocabulary, the first answer tokens skipped,
no reference and no retain rows by default. Run: pytest tests/methods/test_ce_u.py -q"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import unlearnkit.train.loop as train_module
from unlearnkit.data.batch import IGNORE_INDEX, TokenBatch, UnlearnBatch
from unlearnkit.methods.ce_u import CEU
from unlearnkit.registry import METHODS
from unlearnkit.train.reference import Reference


class FixedLogits(nn.Module):
    """A "model" whose logits are one trainable (1, T, V) tensor, whatever the input."""

    def __init__(self, z: torch.Tensor):
        super().__init__()
        self.z = nn.Parameter(z.clone())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.z)


def one_row(labels: list[int]) -> UnlearnBatch:
    ids = torch.tensor([[max(t, 0) for t in labels]])
    return UnlearnBatch(TokenBatch(ids, torch.ones_like(ids), torch.tensor([labels])))


@pytest.fixture
def references(monkeypatch) -> list[Reference]:
    """Every Reference the trainer builds during the test."""
    made: list[Reference] = []

    class Recording(Reference):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(train_module, "Reference", Recording)
    return made


def test_three_token_distribution_by_hand():
    # One answer token (label 0) predicted from position 0 with p = (0.5, 0.3, 0.2): the target drops
    # token 0 and renormalises the rest, q = (0, 0.6, 0.4).
    z = torch.log(torch.tensor([[[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]]]))
    model = FixedLogits(z)
    out = CEU(ignore_first_n_answer_tokens=0).loss(model, one_row([IGNORE_INDEX, 0]), None)
    assert out.total.item() == pytest.approx(-(0.6 * math.log(0.3) + 0.4 * math.log(0.2)), abs=1e-6)
    assert out.parts["forget_nll"].item() == pytest.approx(-math.log(0.5), abs=1e-6)
    (grad,) = torch.autograd.grad(out.total, [model.z])
    # dL/dz = softmax(z) − q: the true token's logit is pushed down by exactly its probability
    torch.testing.assert_close(grad[0, 0], torch.tensor([0.5, 0.3 - 0.6, 0.2 - 0.4]), rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(grad[0, 1]) == 0  # position 1 predicts nothing supervised


@pytest.mark.parametrize("skip", [0, 1, 2])
def test_the_first_answer_tokens_are_skipped(skip):
    # Answer tokens 1, 2, 0 (predicted from positions 1, 2, 3); the first `skip` of them carry no loss.
    torch.manual_seed(0)
    model = FixedLogits(torch.randn(1, 5, 3))
    out = CEU(ignore_first_n_answer_tokens=skip).loss(model, one_row([IGNORE_INDEX, IGNORE_INDEX, 1, 2, 0]), None)
    (grad,) = torch.autograd.grad(out.total, [model.z])
    touched = [position for position in range(5) if torch.count_nonzero(grad[0, position])]
    assert touched == [1, 2, 3][skip:]
    for position in touched:  # the loss is a mean over the kept positions: 1/|A| on each
        label = [1, 2, 0][position - 1]
        p = model.z[0, position].detach().softmax(-1)
        assert grad[0, position, label].item() == pytest.approx(p[label].item() / len(touched), rel=1e-5)


def test_no_supervised_position_left_is_a_zero_loss_not_nan():
    model = FixedLogits(torch.zeros(1, 3, 3))
    out = CEU(ignore_first_n_answer_tokens=5).loss(model, one_row([IGNORE_INDEX, 1, 2]), None)
    assert out.total.item() == 0.0


def test_no_reference_and_no_retain_rows_by_default(train_tiny, references):
    seen = []

    class Recording(CEU):
        def forget_loss(self, model, batch, ref):
            seen.append(batch.retain)
            return super().forget_loss(model, batch, ref)

    method = Recording()
    assert method.needs_reference() is None and not method.needs_retain()
    assert train_tiny(method, 2).stopped is None
    assert references == [] and seen == [None, None]
    assert METHODS.build("ce_u", retain_weight=1.0).needs_retain()
    assert METHODS.build("ce_u", retain_weight=1.0, retain_loss="kl").needs_reference() == "model"
