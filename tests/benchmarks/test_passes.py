"""score_examples and generate_greedy: batching, ordering and padding never change the numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnkit.benchmarks.generation import eos_token_ids, generate_greedy
from unlearnkit.benchmarks.passes import score_examples
from unlearnkit.data.batch import IGNORE_INDEX

QA = [
    ("Who wrote the book?", "The book was written by Ana Ruiz."),
    ("Where was the author born?", "Lima."),
    ("What genre does she write?", "She writes crime novels and short stories, mostly set in Peru."),
    ("What did the cat do?", "The cat sat on the mat."),
    ("Where did the dog run?", "In the park."),
    ("What is the capital of France?", "Paris"),
]


@pytest.fixture(scope="module")
def examples(tokenizer, fmt):
    return [fmt.encode(tokenizer, q, a) for q, a in QA]


def unbatched_reference(model, example):
    """Summed answer log-prob of one example, computed directly (no padding, no shared code)."""
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    total = 0.0
    for t in range(1, len(example.input_ids)):
        if example.labels[t] != IGNORE_INDEX:
            total += logp[t - 1, example.input_ids[t]].item()
    return total


def test_score_examples_equals_unbatched_computation(model, tokenizer, examples):
    summed, n_tokens = score_examples(model, examples, tokenizer.pad_token_id, batch_size=4)
    expected = [unbatched_reference(model, e) for e in examples]
    np.testing.assert_allclose(summed, expected, rtol=1e-5, atol=1e-5)
    assert n_tokens.tolist() == [sum(label != IGNORE_INDEX for label in e.labels) for e in examples]
    assert all(n >= 2 for n in n_tokens)  # at least one answer token plus the labelled EOS
    assert summed.dtype == np.float64 and n_tokens.dtype == np.int64


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_score_examples_invariant_to_order_and_batch_size(model, tokenizer, examples, data):
    permutation = data.draw(st.permutations(range(len(examples))))
    batch_size = data.draw(st.integers(min_value=1, max_value=len(examples) + 1))
    base, base_counts = score_examples(model, examples, tokenizer.pad_token_id, batch_size=len(examples))
    shuffled, counts = score_examples(model, [examples[i] for i in permutation], tokenizer.pad_token_id,
                                      batch_size=batch_size)
    np.testing.assert_allclose(shuffled, base[list(permutation)], rtol=1e-5, atol=1e-5)
    assert counts.tolist() == base_counts[list(permutation)].tolist()


def test_score_examples_empty_and_restores_train_mode(model, tokenizer, examples):
    summed, counts = score_examples(model, [], tokenizer.pad_token_id)
    assert summed.shape == (0,) and counts.shape == (0,)
    model.train()
    try:
        score_examples(model, examples[:2], tokenizer.pad_token_id)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="batch_size"):
        score_examples(model, examples, tokenizer.pad_token_id, batch_size=0)


@pytest.fixture(scope="module")
def prompts(tokenizer, fmt):
    return [fmt.prompt_ids(tokenizer, q) for q, _ in QA]


def test_generate_batched_equals_one_by_one(model, tokenizer, prompts):
    assert len({len(p) for p in prompts}) > 1  # different lengths: the batch really is left-padded
    batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=12, batch_size=len(prompts))
    single = [generate_greedy(model, tokenizer, [p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert generate_greedy(model, tokenizer, prompts[::-1], max_new_tokens=12, batch_size=4) == batched[::-1]


def test_generate_passes_left_padded_attention_mask(model, tokenizer, prompts, monkeypatch):
    seen = []
    original = model.generate

    def spy(*args, **kwargs):
        seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    generate_greedy(model, tokenizer, prompts, max_new_tokens=3, batch_size=len(prompts))
    (ids, mask), = seen
    lengths = sorted((len(p) for p in prompts), reverse=True)
    assert mask.sum(1).tolist() == lengths  # sorted longest first
    for row, n in enumerate(lengths):
        assert mask[row, -n:].all() and not mask[row, :-n].any()  # padding on the left
        assert (ids[row, :-n] == tokenizer.pad_token_id).all()


class EosOverride:
    """The tokenizer, with a different EOS id (to make a random model 'finish' at a known step)."""

    def __init__(self, tokenizer, eos_id: int):
        self._tokenizer, self.eos_token_id = tokenizer, eos_id

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def raw_greedy_tokens(model, tokenizer, prompt, n):
    """Plain HF greedy decoding of one prompt, with no EOS (so every step is visible)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    return out[0, len(prompt):].tolist()


def test_each_sample_stops_at_its_own_eos(model, tokenizer, prompts):
    tokens = raw_greedy_tokens(model, tokenizer, prompts[0], 12)
    stop = next(k for k in range(2, len(tokens)) if tokens[k] not in tokens[:k])
    fake = EosOverride(tokenizer, tokens[stop])
    expected_first = tokenizer.decode(tokens[:stop], skip_special_tokens=True).strip()
    batched = generate_greedy(model, fake, prompts[:3], max_new_tokens=12, batch_size=3)
    assert batched[0] == expected_first
    # the other samples are unaffected by the first one finishing early
    assert batched[1:] == [generate_greedy(model, fake, [p], max_new_tokens=12)[0] for p in prompts[1:3]]


def test_sampling_settings_do_not_leak(model, tokenizer, prompts):
    greedy = generate_greedy(model, tokenizer, prompts[:2], max_new_tokens=8)
    original = model.generation_config
    original.do_sample, original.temperature, original.top_k = True, 50.0, 0
    try:
        torch.manual_seed(123)
        assert generate_greedy(model, tokenizer, prompts[:2], max_new_tokens=8) == greedy
        assert model.generation_config is original  # restored
    finally:
        original.do_sample, original.temperature, original.top_k = False, None, None


def test_stop_strings_and_eos_ids(model, tokenizer, prompts):
    plain = generate_greedy(model, tokenizer, prompts[:1], max_new_tokens=10)[0]
    if len(plain) > 2:
        cut = generate_greedy(model, tokenizer, prompts[:1], max_new_tokens=10, stop_strings=[plain[2]])[0]
        assert cut == plain.split(plain[2])[0].strip()
    assert eos_token_ids(model, tokenizer) == [tokenizer.eos_token_id]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [7, tokenizer.eos_token_id, 9]  # Llama-3-Instruct style list
    try:
        assert eos_token_ids(model, tokenizer) == [tokenizer.eos_token_id, 7, 9]
    finally:
        model.generation_config.eos_token_id = saved
    assert generate_greedy(model, tokenizer, []) == []
    with pytest.raises(ValueError, match="empty prompt"):
        generate_greedy(model, tokenizer, [[]])


def test_token_budget_batches_pack_rows_under_the_budget():
    from unlearnkit.benchmarks.passes import _length_batches

    lengths = [10, 3, 7, 7, 2, 12]
    batches = _length_batches(lengths, batch_size=None, max_tokens=21)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) * max(lengths[i] for i in b) <= 21 or len(b) == 1 for b in batches)
    assert batches[0] == [5]  # the longest first, alone when two would not fit
    assert _length_batches(lengths, batch_size=2, max_tokens=1000) == [[5, 0], [2, 3], [1, 4]]
    assert _length_batches([50], batch_size=None, max_tokens=8) == [[0]]  # too long for the budget: its own batch


def test_chunked_log_softmax_and_token_budget_give_the_same_numbers(model, tokenizer, examples, monkeypatch):
    import unlearnkit.benchmarks.passes as passes

    base, counts = score_examples(model, examples, tokenizer.pad_token_id, batch_size=len(examples))
    stats = passes.token_statistics(model, examples, tokenizer.pad_token_id, batch_size=len(examples))
    monkeypatch.setattr(passes, "CHUNK_ELEMENTS", 3 * model.config.vocab_size)  # three positions per chunk
    chunked, _ = score_examples(model, examples, tokenizer.pad_token_id, batch_size=None, max_tokens=40)
    chunked_stats = passes.token_statistics(model, examples, tokenizer.pad_token_id, batch_size=None, max_tokens=40)
    np.testing.assert_allclose(chunked, base, rtol=1e-5, atol=1e-5)
    for a, b, count in zip(stats, chunked_stats, counts):
        np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.variance, b.variance, rtol=1e-4, atol=1e-5)
        assert a.predictions.tolist() == b.predictions.tolist() and len(a.logprobs) == count
