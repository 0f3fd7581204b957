"""Forget/retain pairing across data-parallel ranks and epochs, and collation.

The bug this guards against (OpenUnlearning #139): retain samples drawn from the global torch RNG
are identical on every rank, so N GPUs train on one retain sample N times.
"""

from __future__ import annotations

import pytest
import torch

from unlearnkit.data.batch import IGNORE_INDEX, Example, collate, collate_prompts
from unlearnkit.data.pairing import UnlearnData, batch_stream, epoch_batches
from unlearnkit.errors import UnlearnError


def rows(batch) -> list[tuple[int, ...]]:
    """Each row's unpadded ids (toy examples are all distinct)."""
    return [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch.input_ids, batch.attention_mask)]


def epoch_rows(data, epoch, seed=0, rank=0, world_size=1, batch_size=2):
    forget, retain, idk = [], [], []
    for b in epoch_batches(data, batch_size, epoch, seed, rank, world_size):
        forget += rows(b.forget)
        retain += rows(b.retain)
        idk += rows(b.extra["idk"])
    return forget, retain, idk


@pytest.fixture(scope="module")
def data(make_toy_data) -> UnlearnData:
    data = make_toy_data(n_forget=8, n_retain=12, seed=1)
    assert len(set(data.forget)) == 8 and len(set(data.retain)) == 12  # rows are identifiable
    return data


def test_two_ranks_get_disjoint_forget_rows_covering_the_epoch(data):
    f0, _, _ = epoch_rows(data, epoch=0, rank=0, world_size=2)
    f1, _, _ = epoch_rows(data, epoch=0, rank=1, world_size=2)
    assert len(f0) == len(f1) == 4
    assert not set(f0) & set(f1)
    assert set(f0) | set(f1) == {e.input_ids for e in data.forget}


def test_two_ranks_get_different_retain_rows(data):
    _, r0, _ = epoch_rows(data, epoch=0, rank=0, world_size=2)
    _, r1, _ = epoch_rows(data, epoch=0, rank=1, world_size=2)
    assert r0 != r1
    assert not set(r0) & set(r1)  # 8 positions out of 12 retain rows: no row repeats within the epoch


def test_extra_views_stay_aligned_with_their_forget_rows(data):
    index = {e.input_ids: i for i, e in enumerate(data.forget)}
    forget, _, idk = epoch_rows(data, epoch=3, rank=1, world_size=2)
    assert [data.extra["idk"][index[f]].input_ids for f in forget] == idk


def test_the_stream_is_a_function_of_seed_and_epoch(data):
    assert epoch_rows(data, epoch=2, seed=5) == epoch_rows(data, epoch=2, seed=5)
    assert epoch_rows(data, epoch=2, seed=5) != epoch_rows(data, epoch=2, seed=6)


def test_different_epochs_reshuffle(data):
    epochs = [epoch_rows(data, epoch=e) for e in range(3)]
    forget_orders = [f for f, _, _ in epochs]
    assert forget_orders[0] != forget_orders[1] != forget_orders[2]
    assert all(sorted(f) == sorted(forget_orders[0]) for f in forget_orders)  # same rows, new order
    assert epochs[0][1] != epochs[1][1]  # retain pairing changes too


def test_batch_stream_runs_epoch_after_epoch(data):
    stream = batch_stream(data, batch_size=4, seed=0)
    got = [rows(next(stream).forget) for _ in range(4)]
    expected = [rows(b.forget) for e in range(2) for b in epoch_batches(data, 4, e, 0)]
    assert got == expected


def test_short_final_batch_wraps_to_the_epoch_start(make_toy_data):
    data = make_toy_data(n_forget=5, n_retain=3)
    batches = list(epoch_batches(data, batch_size=4, epoch=0, seed=0))
    assert [len(b.forget) for b in batches] == [4, 4]
    assert rows(batches[1].forget)[1:] == rows(batches[0].forget)[:3]


def test_without_retain_or_when_the_method_skips_it_there_is_no_retain_batch(data):
    assert next(epoch_batches(data, 2, 0, 0, use_retain=False)).retain is None
    no_retain = UnlearnData(forget=data.forget, pad_id=0)
    assert next(epoch_batches(no_retain, 2, 0, 0)).retain is None


def test_empty_forget_set_is_a_user_error():
    with pytest.raises(UnlearnError, match="forget set is empty"):
        UnlearnData(forget=[])


def test_empty_retain_set_is_a_user_error(data):
    with pytest.raises(UnlearnError, match="retain set is empty"):
        UnlearnData(forget=data.forget, retain=[])


def test_misaligned_extra_view_is_rejected(data):
    with pytest.raises(ValueError, match="extra view 'idk' has 7 rows, forget has 8"):
        UnlearnData(forget=data.forget, extra={"idk": data.forget[:7]})


def test_collate_masks_by_length_even_when_pad_id_appears_inside_a_sequence():
    eos = pad = 2  # pad == EOS, and EOS also appears mid-sequence (a chat turn delimiter)
    a = Example((1, 5, 2, 6, 2), (IGNORE_INDEX, 5, 2, 6, 2))
    b = Example((1, 7, 2), (IGNORE_INDEX, IGNORE_INDEX, eos))
    batch = collate([a, b], pad_id=pad)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.input_ids.tolist() == [[1, 5, 2, 6, 2], [1, 7, 2, 2, 2]]
    assert batch.labels.tolist() == [[-100, 5, 2, 6, 2], [-100, -100, 2, -100, -100]]


def test_collate_needs_at_least_one_example():
    with pytest.raises(ValueError):
        collate([], pad_id=0)


def test_collate_prompts_left_pads():
    ids, mask = collate_prompts([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_row_keys_ignore_padding():
    a = Example((1, 5, 6), (IGNORE_INDEX, 5, 6))
    longer = Example((1, 5, 6, 7, 8), (IGNORE_INDEX, 5, 6, 7, 8))
    alone = collate([a], 0).row_keys()[0]
    padded = collate([a, longer], 0).row_keys()[0]
    assert alone == padded
    relabelled = collate([Example((1, 5, 6), (IGNORE_INDEX, IGNORE_INDEX, 6))], 0).row_keys()[0]
    assert relabelled != alone  # same ids, different supervision: a different cache entry
