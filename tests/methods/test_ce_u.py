"""CE-U: a hand-computed loss and logit gradient on a 3-token vocabulary, the first answer tokens skipped,
no reference and no retain rows by default. Run: pytest tests/methods/test_ce_u.py -q"""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.data.batch import IGNORE_INDEX
from unlearnkit.methods.ce_u import CEU
from unlearnkit.registry import METHODS


def test_three_token_distribution_by_hand(fixed_logits, one_row):
    # One answer token (label 0) predicted from position 0 with p = (0.5, 0.3, 0.2): the target drops
    # token 0 and renormalises the rest, q = (0, 0.6, 0.4).
    z = torch.log(torch.tensor([[[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]]]))
    model = fixed_logits(z)
    out = CEU(ignore_first_n_answer_tokens=0).loss(model, one_row([IGNORE_INDEX, 0]), None)
    assert out.total.item() == pytest.approx(-(0.6 * math.log(0.3) + 0.4 * math.log(0.2)), abs=1e-6)
    assert out.parts["forget_nll"].item() == pytest.approx(-math.log(0.5), abs=1e-6)
    (grad,) = torch.autograd.grad(out.total, [model.z])
    # dL/dz = softmax(z) − q: the true token's logit is pushed down by exactly its probability
    torch.testing.assert_close(grad[0, 0], torch.tensor([0.5, 0.3 - 0.6, 0.2 - 0.4]), rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(grad[0, 1]) == 0  # position 1 predicts nothing supervised


@pytest.mark.parametrize("skip", [0, 1, 2])
def test_the_first_answer_tokens_are_skipped(fixed_logits, one_row, skip):
    # Answer tokens 1, 2, 0 (predicted from positions 1, 2, 3); the first `skip` of them carry no loss.
    torch.manual_seed(0)
    model = fixed_logits(torch.randn(1, 5, 3))
    out = CEU(ignore_first_n_answer_tokens=skip).loss(model, one_row([IGNORE_INDEX, IGNORE_INDEX, 1, 2, 0]), None)
    (grad,) = torch.autograd.grad(out.total, [model.z])
    touched = [position for position in range(5) if torch.count_nonzero(grad[0, position])]
    assert touched == [1, 2, 3][skip:]
    for position in touched:  # the loss is a mean over the kept positions: 1/|A| on each
        label = [1, 2, 0][position - 1]
        p = model.z[0, position].detach().softmax(-1)
        assert grad[0, position, label].item() == pytest.approx(p[label].item() / len(touched), rel=1e-5)


def test_no_supervised_position_left_is_a_zero_loss_not_nan(fixed_logits, one_row):
    model = fixed_logits(torch.zeros(1, 3, 3))
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
