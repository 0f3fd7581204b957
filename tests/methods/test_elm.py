"""ELM: the target is the frozen model's distribution shifted from 'expert' to 'novice' context; the three reference
views line up token for token; the fluency rows are generated once, greedily, before training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unlearnkit.data.batch import IGNORE_INDEX, Example, collate
from unlearnkit.data.pairing import UnlearnData, epoch_batches
from unlearnkit.errors import UnlearnError
from unlearnkit.losses import logits_of, supervised_logits
from unlearnkit.methods.elm import ELM, FLUENT
from unlearnkit.model import LoraSpec, wrap_lora
from unlearnkit.registry import METHODS
from unlearnkit.train.reference import Reference


def ready(method, model, data):
    method.prepare(model)
    data = dataclasses.replace(data, extra=dict(data.extra))
    method.setup(data)
    return data


def test_no_shift_and_no_top_k_has_zero_gradient_at_the_start(tiny_model, toy_data, toy_batch):
    method = ELM(eta=0.0, top_k=0, temperature=1.0, fluency_weight=0.0, retain_weight=0.0)
    ready(method, tiny_model, toy_data)
    out = method.loss(tiny_model, toy_batch, Reference.from_model(tiny_model))
    out.total.backward()
    grads = [p.grad for p in tiny_model.parameters() if p.grad is not None]
    assert grads and max(g.abs().max().item() for g in grads) < 1e-6


def test_same_context_twice_makes_the_target_the_frozen_distribution(tiny_model, toy_data, toy_batch):
    method = ELM(eta=500.0, top_k=0, temperature=1.0, expert_prompt="about {concept}", novice_prompt="about {concept}")
    ready(method, tiny_model, toy_data)
    plain, expert, novice = (supervised_logits(logits_of(tiny_model, v), v.labels)[0]
                             for v in method.views(toy_batch.forget))
    target = torch.softmax(method.target_logits(plain, expert, novice), -1)
    assert torch.allclose(target, torch.softmax(plain, -1), atol=1e-5)


def test_the_shift_lowers_what_the_expert_context_favours(tiny_model, toy_data):
    method = ELM(eta=2.0, top_k=0, temperature=1.0)
    plain, expert = torch.zeros(1, 4), torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    q = torch.softmax(method.target_logits(plain, expert, torch.zeros(1, 4)), -1)[0]
    assert q[0] < q[1] and torch.allclose(q[1:], q[1:].mean().expand(3))
    kept = torch.softmax(ELM(top_k=2, temperature=1.0).target_logits(torch.tensor([[4.0, 3.0, 2.0, 1.0]]),
                                                                      torch.zeros(1, 4), torch.zeros(1, 4)), -1)
    assert (kept[0, 2:] == 0).all() and kept[0, :2].sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("bos", [True, False])
def test_views_keep_the_same_supervised_tokens_after_the_context(tiny_model, toy_data, bos):
    method = ELM(fluency_weight=0.0)
    ready(method, tiny_model, toy_data)
    rows = toy_data.forget[:3]
    if not bos:  # a bare-text row without BOS: every token supervised, the first one too
        rows = [Example(e.input_ids[1:], e.input_ids[1:]) for e in rows]
    batch = collate(rows, toy_data.pad_id)
    views = method.views(batch)
    targets = [supervised_logits(torch.zeros(*v.input_ids.shape, 1), v.labels)[1] for v in views]
    assert torch.equal(targets[0], targets[1]) and torch.equal(targets[0], targets[2])
    for view, context in zip(views[1:], method._contexts):
        start = 1 if bos else 0
        assert torch.equal(view.input_ids[:, start:start + len(context)], context.expand(3, -1))
        assert (view.labels[:, start:start + len(context)] == IGNORE_INDEX).all()
        assert torch.equal(view.attention_mask.sum(1), batch.attention_mask.sum(1) + len(context))


def test_fluency_rows_are_generated_once_greedily_after_the_prompt(tiny_model, toy_data):
    rng = torch.get_rng_state()
    first = ready(ELM(fluency_tokens=5), tiny_model, toy_data).extra[FLUENT]
    second = ready(ELM(fluency_tokens=5), tiny_model, toy_data).extra[FLUENT]
    assert first == second and torch.equal(rng, torch.get_rng_state())
    assert FLUENT not in toy_data.extra
    for forget, fluent in zip(toy_data.forget, first):
        n = forget.prompt_length
        assert fluent.input_ids[:n] == forget.input_ids[:n] and fluent.prompt_length == n
        assert 1 <= len(fluent.input_ids) - n <= 5 and IGNORE_INDEX not in fluent.labels[n:]
    other = ready(ELM(fluency_tokens=5, fluency_guidance=0.0), tiny_model, toy_data).extra[FLUENT]
    assert other != first  # the guidance steers the continuation


def test_cached_fluency_decoding_equals_full_forwards_of_each_view(tiny_model, toy_data):
    """Each view's KV cache (left-padded prompts of different lengths, explicit positions) gives the tokens that
    full forwards of the growing rows give, one row at a time; rows stop at their own EOS."""
    method = ELM(fluency_tokens=6)
    data = ready(method, tiny_model, toy_data)
    eos = {2}
    tiny_model.eval()
    for forget, fluent in zip(toy_data.forget, data.extra[FLUENT]):
        n = fluent.prompt_length
        row = list(forget.input_ids[:n])
        with torch.no_grad():
            for _ in range(6):
                views = method.views(collate([Example(tuple(row), tuple([0] * len(row)))], 0))
                offsets = [0] + [len(c) for c in method._contexts]
                logits = [tiny_model(input_ids=v.input_ids).logits[:, len(row) - 1 + off] for v, off in zip(views, offsets)]
                token = int(method.target_logits(*logits, eta=method.fluency_guidance, top_k=0).argmax(-1))
                row.append(token)
                if token in eos:
                    break
        assert list(fluent.input_ids) == row


def test_fluency_term_is_trained_and_logged(train_tiny):
    run = train_tiny(ELM(), 2)
    assert run.steps == 2
    assert {"erase", "fluency", "retain"} <= set(run.history[-1])
    silent = train_tiny(ELM(fluency_weight=0.0), 2)
    assert "fluency" not in silent.history[-1]


def test_needs_a_tokenizer_and_valid_templates(tiny_model, toy_data):
    method = ELM()
    method.prepare(tiny_model)
    with pytest.raises(UnlearnError, match="tokenizer"):
        method.setup(UnlearnData(toy_data.forget, pad_id=toy_data.pad_id))
    with pytest.raises(UnlearnError, match="setup"):
        ELM().loss(tiny_model, next(epoch_batches(toy_data, 4, epoch=0, seed=0)), Reference.from_model(tiny_model))
    with pytest.raises(UnlearnError, match="placeholder"):
        METHODS.build("elm", expert_prompt="an expert on {topic}")


def test_lora_teacher_is_the_adapters_off_model(tiny_model, toy_batch, train_tiny, references):
    run = train_tiny(ELM(), 2, model=wrap_lora(tiny_model, LoraSpec(r=4)))
    assert run.trained_names and all("lora_" in n for n in run.trained_names)
    (ref,) = references
    assert ref.shares_weights and ref.model is run.model  # no second copy of the weights
    with torch.no_grad():
        torch.testing.assert_close(ref.logits(toy_batch.forget), logits_of(tiny_model, toy_batch.forget),
                                   atol=1e-5, rtol=0)
