"""AltPO: alternates sampled once by the starting model (seeded, never the forget answer), DPO's loss with them as
the preferred view, and only cached reference log-probs (no copy of the model)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import unlearnkit.methods.altpo as altpo_module
from unlearnkit.data.batch import IGNORE_INDEX
from unlearnkit.data.pairing import epoch_batches
from unlearnkit.errors import UnlearnError
from unlearnkit.methods.altpo import AltPO
from unlearnkit.methods.dpo import DPO
from unlearnkit.train.reference import Reference


def answer(example) -> list[int]:
    return [t for t in example.labels if t != IGNORE_INDEX]


def alternates(method, model, data) -> list[tuple[int, ...]]:
    method.prepare(model)
    method.setup(data)
    return [e.input_ids for name in method.names() for e in data.extra[name]]


def test_alternates_are_generated_once_before_training(train_tiny, make_toy_data, monkeypatch):
    calls = []
    sample = altpo_module._sample
    monkeypatch.setattr(altpo_module, "_sample", lambda *a, **k: calls.extend(a[1]) or sample(*a, **k))  # per row
    data = make_toy_data()
    method = AltPO(n_alternates=2)
    run = train_tiny(method, 6, data=data)  # 6 steps of 4 rows: each of the 8 rows seen 3 times
    assert run.steps == 6
    assert "alternate/0" not in data.extra  # the trainer gave the method its own copy of the views
    state = method.state_dict()  # the alternates it trained with
    assert len(state["alternate/0.lengths"]) == len(state["alternate/1.lengths"]) == len(data.forget)
    assert len(data.forget) * 2 <= len(calls) <= len(data.forget) * 2 * method.max_tries  # all during setup
    before = len(calls)
    method.setup(data)  # (as the trainer does, on the caller's data this time)
    assert len(calls) > before
    before = len(calls)
    batch = next(epoch_batches(data, 4, epoch=0, seed=0))
    method.loss(run.model, batch, Reference.from_model(run.model))  # the views are in the batch: no sampling
    assert len(calls) == before


def test_alternates_are_deterministic_for_a_seed(tiny_model, make_toy_data):
    first = alternates(AltPO(seed=3), tiny_model, make_toy_data())
    second = alternates(AltPO(seed=3), tiny_model, make_toy_data())
    other = alternates(AltPO(seed=4), tiny_model, make_toy_data())
    assert first == second
    assert first != other
    rng = torch.get_rng_state()
    alternates(AltPO(seed=3), tiny_model, make_toy_data())
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is neither used nor moved


def test_sampling_prompts_together_draws_what_each_prompt_draws_alone(tiny_model, make_toy_data, monkeypatch):
    """Left-padded prompts of different lengths under one KV cache, each row with its own generator: the draws of
    sampling one prompt at a time, rejected draws and all."""
    together = alternates(AltPO(n_alternates=2, max_new_tokens=12), tiny_model, make_toy_data())
    monkeypatch.setattr(altpo_module, "SAMPLE_BATCH", 1)
    alone = alternates(AltPO(n_alternates=2, max_new_tokens=12), tiny_model, make_toy_data())
    assert together == alone and len({len(ids) for ids in together}) > 1


def test_alternates_differ_from_the_forget_answers(fitted_model, make_toy_data):
    data = make_toy_data()
    alternates(AltPO(n_alternates=3), fitted_model, data)  # a model that knows the answers: repeats get resampled
    for k in range(3):
        for forget, alt in zip(data.forget, data.extra[f"alternate/{k}"]):
            assert alt.input_ids[: forget.prompt_length] == forget.input_ids[: forget.prompt_length]
            assert answer(alt) != answer(forget) and answer(alt)[-1] == forget.labels[-1]  # the forget row's EOS


def test_a_draw_repeating_the_forget_answer_is_resampled_then_dropped(tiny_model, make_toy_data, monkeypatch):
    data = make_toy_data(n_forget=1)
    forget = answer(data.forget[0])[:-1]  # without EOS
    draws = iter([forget, [3, 4]])
    monkeypatch.setattr(altpo_module, "_sample", lambda *a: [next(draws)])
    alternates(AltPO(), tiny_model, data)
    assert answer(data.extra["alternate/0"][0]) == [3, 4, data.forget[0].labels[-1]]

    monkeypatch.setattr(altpo_module, "_sample", lambda *a: [list(forget)])
    data = make_toy_data(n_forget=1)
    alternates(AltPO(max_tries=3), tiny_model, data)
    assert answer(data.extra["alternate/0"][0]) == [data.forget[0].labels[-1]]  # the empty answer: EOS only


@pytest.mark.parametrize("n", [1, 2])
def test_loss_is_dpo_with_the_alternates_as_the_preferred_view(n, fitted_model, tiny_model, make_toy_data):
    data = make_toy_data()
    method = AltPO(n_alternates=n)
    alternates(method, fitted_model, data)
    batch = next(epoch_batches(data, 4, epoch=0, seed=0))
    ref = Reference.from_model(tiny_model)  # another model, so the margins are not 0
    out = method.loss(fitted_model, batch, ref)
    dpo = [DPO().loss(fitted_model, replace(batch, extra={"idk": batch.extra[f"alternate/{k}"]}), ref)
           for k in range(n)]
    expected = sum(d.parts["forget"] for d in dpo) / n
    assert out.parts["forget"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.total.item() == pytest.approx(expected.item() + dpo[0].parts["retain"].item(), rel=1e-6)
    assert abs(out.parts["margin"].item()) > 1e-4


def test_a_direct_loss_call_without_setup_samples_the_same_alternates(tiny_model, make_toy_data):
    data = make_toy_data()
    method = AltPO()
    alternates(method, tiny_model, data)
    batch = next(epoch_batches(data, 4, epoch=0, seed=0))
    bare = replace(batch, extra={})
    ref = Reference.from_model(tiny_model)
    assert method.loss(tiny_model, bare, ref).total.item() == method.loss(tiny_model, batch, ref).total.item()


def test_only_cached_reference_log_probs_cover_the_alternates(train_tiny, make_toy_data, references):
    run = train_tiny(AltPO(), 3, data=make_toy_data())
    assert len(references) == 1 and references[0].shares_weights  # the trainer's cache: no copy of the model
    with pytest.raises(RuntimeError, match="released"):
        references[0].model  # released before step 1: every alternate's log-prob came from the cache
    assert run.steps == 3


def test_the_alternates_are_checkpointed_and_checked_on_resume(tiny_model, make_toy_data):
    method = AltPO()
    alternates(method, tiny_model, make_toy_data())
    state = method.state_dict()
    assert set(state) == {"alternate/0.ids", "alternate/0.lengths"}
    method.load_state_dict(state)  # the same draw: fine
    changed = {**state, "alternate/0.ids": state["alternate/0.ids"].flip(0)}
    with pytest.raises(UnlearnError, match="differ"):
        method.load_state_dict(changed)
