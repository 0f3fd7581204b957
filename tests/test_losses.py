"""losses.py by hand: label shift, −100 masking, token-weighted NLL, KL direction and masking,
and the padding / batch-order invariances every likelihood must have."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from unlearnkit.data.batch import IGNORE_INDEX, Example, TokenBatch, collate
from unlearnkit.losses import (
    kl_to_reference,
    nll,
    nll_from_logits,
    sequence_logprob,
    sequence_logprob_from_logits,
)


class BigramStub(nn.Module):
    """Logits at position t depend only on the token at t: logits = table[input_ids].

    It has no `logits` / `sequence_logprob` attributes, so losses.py treats it as a model.
    """

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


# Next-token distributions over a 3-token vocabulary, chosen so each probability is a simple fraction:
#   after 0: (1/3, 1/3, 1/3)   after 1: (1/2, 1/4, 1/4)   after 2: (1/5, 3/5, 1/5)
TABLE = torch.tensor([[0.0, 0.0, 0.0],
                      [math.log(2), 0.0, 0.0],
                      [0.0, math.log(3), 0.0]])


@pytest.fixture
def stub() -> BigramStub:
    return BigramStub(TABLE.clone())


@pytest.fixture
def hand_batch() -> TokenBatch:
    rows = [
        # label 0 equals the pad id and is still a real target (pad == EOS case)
        Example((1, 2, 0), (IGNORE_INDEX, 2, 0)),  # p(2|1)·p(0|2) = 1/4 · 1/5
        Example((0, 1), (IGNORE_INDEX, 1)),  # p(1|0) = 1/3; right-padded to length 4
        Example((1, 1, 2, 2), (IGNORE_INDEX, 0, IGNORE_INDEX, 1)),  # p(0|1)·p(1|2) = 1/2 · 3/5; middle masked
    ]
    return collate(rows, pad_id=0)


HAND_SUMS = [math.log(1 / 20), math.log(1 / 3), math.log(3 / 10)]
HAND_COUNTS = [2, 1, 2]


def test_sequence_logprob_shifts_labels_and_skips_masked_positions(stub, hand_batch):
    got = sequence_logprob(stub, hand_batch)
    assert got.tolist() == pytest.approx(HAND_SUMS, abs=1e-6)


def test_sequence_logprob_mean_divides_by_each_rows_supervised_tokens(stub, hand_batch):
    got = sequence_logprob(stub, hand_batch, mean=True)
    assert got.tolist() == pytest.approx([s / n for s, n in zip(HAND_SUMS, HAND_COUNTS)], abs=1e-6)


def test_nll_is_token_weighted_over_the_batch_not_a_mean_of_row_means(stub, hand_batch):
    token_weighted = -sum(HAND_SUMS) / sum(HAND_COUNTS)
    mean_of_means = -sum(s / n for s, n in zip(HAND_SUMS, HAND_COUNTS)) / 3
    assert abs(token_weighted - mean_of_means) > 1e-3  # the two readings are distinguishable here
    assert nll(stub, hand_batch).item() == pytest.approx(token_weighted, abs=1e-6)


def test_row_with_no_supervised_tokens_contributes_zero_and_nll_stays_finite(stub):
    batch = collate([Example((1, 2), (IGNORE_INDEX, IGNORE_INDEX))], pad_id=0)
    assert sequence_logprob(stub, batch).tolist() == [0.0]
    assert nll(stub, batch).item() == 0.0


def test_kl_is_zero_for_identical_logits():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 5, dtype=torch.long)
    assert kl_to_reference(logits, logits.clone(), mask).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_hand_value_two_token_vocab_reference_first_and_padding_excluded():
    # ref p = (1/2, 1/2), model q = (3/4, 1/4) at the one real position:
    # KL(p‖q) = ½·log(½ / ¾) + ½·log(½ / ¼) = ½·log(4/3). (KL(q‖p) ≈ 0.1308 would differ.)
    model = torch.tensor([[[math.log(3), 0.0], [5.0, -5.0]]])
    ref = torch.tensor([[[0.0, 0.0], [-5.0, 5.0]]])  # the second position is padding
    mask = torch.tensor([[1, 0]])
    assert kl_to_reference(model, ref, mask).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_right_padding_does_not_change_a_rows_logprob_on_a_real_model(tiny_model, toy_data, make_example):
    short = min(toy_data.forget, key=lambda e: len(e.input_ids))
    long = make_example([3, 4, 5, 6, 7, 8], [20, 21, 22, 23, 24, 25, 26])
    assert len(long.input_ids) > len(short.input_ids)
    with torch.no_grad():
        alone = sequence_logprob(tiny_model, collate([short], 0))
        padded = sequence_logprob(tiny_model, collate([short, long], 0))[:1]
        alone_nll = nll(tiny_model, collate([short], 0))
        padded_nll = nll(tiny_model, collate([short, short], 0))
    assert padded.item() == pytest.approx(alone.item(), abs=1e-5)
    assert padded_nll.item() == pytest.approx(alone_nll.item(), abs=1e-5)


@st.composite
def logits_and_labels(draw):
    b, t, v = draw(st.integers(1, 5)), draw(st.integers(2, 7)), draw(st.integers(2, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(b, t, v, generator=gen) * 3
    labels = torch.randint(0, v, (b, t), generator=gen)
    labels[torch.rand(b, t, generator=gen) < 0.3] = IGNORE_INDEX
    perm = draw(st.permutations(list(range(b))))
    return logits, labels, torch.tensor(perm, dtype=torch.long)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logits_and_labels())
def test_batch_order_permutes_rows_and_leaves_batch_means_unchanged(case):
    logits, labels, perm = case
    per_row = sequence_logprob_from_logits(logits, labels)
    torch.testing.assert_close(sequence_logprob_from_logits(logits[perm], labels[perm]), per_row[perm])
    per_row_mean = sequence_logprob_from_logits(logits, labels, mean=True)
    torch.testing.assert_close(sequence_logprob_from_logits(logits[perm], labels[perm], mean=True),
                               per_row_mean[perm])
    torch.testing.assert_close(nll_from_logits(logits[perm], labels[perm]), nll_from_logits(logits, labels))
    ref = logits.flip(-1)
    mask = (labels != IGNORE_INDEX).long()
    torch.testing.assert_close(kl_to_reference(logits[perm], ref[perm], mask[perm]),
                               kl_to_reference(logits, ref, mask))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logits_and_labels(), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_appending_right_padding_changes_nothing(case, extra, seed):
    logits, labels, _ = case
    b, t, v = logits.shape
    gen = torch.Generator().manual_seed(seed)
    pad_logits = torch.cat([logits, torch.randn(b, extra, v, generator=gen) * 10], dim=1)  # junk at pads
    pad_labels = torch.cat([labels, torch.full((b, extra), IGNORE_INDEX)], dim=1)
    torch.testing.assert_close(sequence_logprob_from_logits(pad_logits, pad_labels),
                               sequence_logprob_from_logits(logits, labels))
    torch.testing.assert_close(nll_from_logits(pad_logits, pad_labels), nll_from_logits(logits, labels))
    mask = torch.ones(b, t, dtype=torch.long)
    pad_mask = torch.cat([mask, torch.zeros(b, extra, dtype=torch.long)], dim=1)
    ref = logits.flip(-1)
    pad_ref = torch.cat([ref, torch.randn(b, extra, v, generator=gen)], dim=1)
    torch.testing.assert_close(kl_to_reference(pad_logits, pad_ref, pad_mask), kl_to_reference(logits, ref, mask))
