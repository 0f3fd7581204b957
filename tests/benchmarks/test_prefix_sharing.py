"""Shared prompt prefixes (`benchmarks.prefix`): the same numbers as the plain path, fewer tokens, and the plain
path wherever sharing is not safe."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnkit.benchmarks import passes, prefix
from unlearnkit.benchmarks.passes import score_examples, token_statistics
from unlearnkit.benchmarks.readout import Readout
from unlearnkit.data.batch import IGNORE_INDEX, Example

QUESTIONS = [  # several answers per question (TOFU: answer, paraphrase, perturbed), of mixed lengths
    ("Who wrote the book?",
     ["The book was written by Ana Ruiz.", "Ana Ruiz.", "It was written by a man from Lima, Peru.", "Nobody wrote it."]),
    ("Where was the author born? Tell me the city and the country.",
     ["Lima, Peru.", "In Lima", "She was born in Paris."]),
    ("What genre does she write?", ["Crime novels and short stories, mostly set in Peru.", "Crime."]),
    ("What did the cat do?", ["The cat sat on the mat."]),  # a prefix of its own
    ("What is the capital of France?", ["Paris"]),
]


@pytest.fixture(scope="module")
def examples(tokenizer, fmt):
    out = [fmt.encode(tokenizer, q, a) for q, answers in QUESTIONS for a in answers]
    ids = out[0].input_ids
    out.append(Example(ids, (IGNORE_INDEX,) * len(ids)))  # nothing supervised
    out.append(Example(ids, (IGNORE_INDEX, *ids[1:])))  # supervised from index 1: no prefix to share (k = 0)
    out.append(out[1])  # a duplicate
    random.Random(0).shuffle(out)
    return out


@pytest.fixture
def shared_runs(monkeypatch):
    """The `prefix.SharedBatch`es that ran through the shared path."""
    ran: list = []
    original = prefix.run

    def spy(model, rows, batch, pad_id, device):
        ran.append(batch)
        return original(model, rows, batch, pad_id, device)

    monkeypatch.setattr(prefix, "run", spy)
    return ran


def both_paths(monkeypatch, fn):
    monkeypatch.setattr(passes, "SHARE_PREFIXES", False)
    plain = fn()
    monkeypatch.setattr(passes, "SHARE_PREFIXES", True)
    return plain, fn()


def assert_same_scores(plain, shared):
    (a, n), (b, m) = plain, shared
    assert n.tolist() == m.tolist()
    assert np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)) <= 1e-5


def assert_same_statistics(plain, shared):
    assert len(plain) == len(shared)
    for x, y in zip(plain, shared):
        for field in ("logprobs", "mean", "variance"):
            np.testing.assert_allclose(getattr(y, field), getattr(x, field), rtol=1e-5, atol=1e-5)
        assert y.predictions.tolist() == x.predictions.tolist() and y.targets.tolist() == x.targets.tolist()


def unbatched(model, example):
    """Summed supervised log-prob of one example, from one unpadded forward."""
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(logp[t - 1, example.input_ids[t]].item() for t in range(1, len(ids[0]))
               if example.labels[t] != IGNORE_INDEX)


@pytest.mark.parametrize("batch_size,max_tokens", [(32, None), (3, None), (4, 60), (None, 100), (2, 90)])
def test_shared_prefixes_give_the_plain_numbers_in_order(model, tokenizer, examples, monkeypatch, shared_runs,
                                                         batch_size, max_tokens):
    pad = tokenizer.pad_token_id
    plain, shared = both_paths(monkeypatch, lambda: score_examples(model, examples, pad, batch_size,
                                                                  max_tokens=max_tokens))
    assert shared_runs, "the shared path did not run"
    assert_same_scores(plain, shared)
    np.testing.assert_allclose(shared[0], [unbatched(model, e) for e in examples], rtol=1e-5, atol=1e-5)
    stats = both_paths(monkeypatch, lambda: token_statistics(model, examples, pad, batch_size, max_tokens=max_tokens))
    assert_same_statistics(*stats)
    np.testing.assert_allclose([s.logprobs.sum() for s in stats[1]], shared[0], rtol=1e-5, atol=1e-5)


def test_a_group_runs_its_prefix_once_and_feeds_fewer_tokens(model, tokenizer, examples, monkeypatch):
    calls: list[tuple[torch.Tensor, torch.Tensor, int | None]] = []  # (input_ids, mask, tokens cached or None)
    planned: list = []
    plan = prefix.plan
    monkeypatch.setattr(prefix, "plan", lambda *args: planned.append(plan(*args)) or planned[-1])

    def record(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        calls.append((kwargs["input_ids"], kwargs["attention_mask"], None if cache is None else cache.get_seq_length()))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        fed = []
        for share in (False, True):
            monkeypatch.setattr(passes, "SHARE_PREFIXES", share)
            calls.clear()
            score_examples(model, examples, tokenizer.pad_token_id, batch_size=32)
            fed.append(sum(ids.numel() for ids, _, _ in calls))
    finally:
        handle.remove()
    plain_fed, shared_fed = fed
    assert plain_fed == len(examples) * max(len(e.input_ids) for e in examples)  # one plain batch
    assert shared_fed < plain_fed
    (_, batches), = planned
    prefix_calls = [(ids, mask) for ids, mask, cached in calls if cached == 0]
    assert len(prefix_calls) == len(batches) == 1  # everything fits one batch: one prefix forward, one continuation
    ids, mask = prefix_calls[0]
    ran = [tuple(ids[row][mask[row].bool()].tolist()) for row in range(len(ids))]
    assert len(set(ran)) == len(ran)  # each prefix once in its batch
    expected = sorted(tuple(examples[b.indices[b.groups.index(g)]].input_ids[:k]) for b in batches
                      for g, k in enumerate(b.prefix_lengths))
    assert sorted(ran) == expected
    assert len(ran) >= 2 and len(ran) < len(batches[0].indices)  # some prefixes do serve several answers
    (continuation,) = [ids for ids, _, cached in calls if cached]
    assert len(continuation) == len(batches[0].indices)


@pytest.mark.parametrize("case", ["readout", "edits", "reference", "switched off"])
def test_plain_path_where_sharing_is_unsafe(model, tokenizer, examples, monkeypatch, shared_runs, case):
    pad = tokenizer.pad_token_id
    target, readout = model, None
    if case == "readout":
        readout = Readout(len(examples), lens=True)
    elif case == "edits":
        from unlearnkit.model.edits import add_edit

        target = copy.deepcopy(model)
        add_edit(target, [0], rank=2)
    elif case == "reference":
        class Reference(torch.nn.Module):  # anything with its own `logits` method, as losses.logits_of takes it
            def __init__(self):
                super().__init__()
                self.inner = model

            def logits(self, batch):
                return self.inner(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits

        target = Reference().eval()  # in train mode the pass would hand the shared model back in train mode
    else:
        monkeypatch.setattr(passes, "SHARE_PREFIXES", False)
    assert not prefix.can_share(target) or case in ("readout", "switched off")
    summed, _ = score_examples(target, examples, pad, batch_size=4, readout=readout)
    assert shared_runs == []
    if case != "edits":
        np.testing.assert_allclose(summed, [unbatched(model, e) for e in examples], rtol=1e-5, atol=1e-5)
    if case == "readout":
        assert all(row is not None for row in readout.rows)


def test_lora_model_shares_prefixes(model, tokenizer, examples, monkeypatch, shared_runs):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False)).eval()
    assert prefix.can_share(lora)
    pad = tokenizer.pad_token_id
    assert_same_scores(*both_paths(monkeypatch, lambda: score_examples(lora, examples, pad, batch_size=5)))
    assert shared_runs


def test_sliding_window_model_shares_prefixes_exactly(tokenizer, examples, monkeypatch, shared_runs):
    """Left-padded prefixes keep key distances equal to position distances: a window shorter than the prompts
    gives the plain numbers."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    mistral = MistralForCausalLM(MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=6, pad_token_id=tokenizer.pad_token_id)).eval()
    assert prefix.can_share(mistral)
    pad = tokenizer.pad_token_id
    assert_same_scores(*both_paths(monkeypatch, lambda: score_examples(mistral, examples, pad, batch_size=6)))
    assert_same_statistics(*both_paths(monkeypatch, lambda: token_statistics(mistral, examples, pad, batch_size=6)))
    assert shared_runs


ARCHITECTURES = {  # learned absolute positions (GPT-2, OPT's offset table), rotary, soft-capping + alternating windows
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=2)),
    "opt": ("OPTConfig", dict(hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                              word_embed_proj_dim=32, bos_token_id=1, eos_token_id=2)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64)),
    "gemma2": ("Gemma2Config", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                    intermediate_size=64, head_dim=16, sliding_window=4)),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_other_architectures_share_prefixes_exactly(arch, tokenizer, examples, monkeypatch, shared_runs):
    import transformers

    config_class, extra = ARCHITECTURES[arch]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **extra)
    net = transformers.AutoModelForCausalLM.from_config(config).eval()
    assert prefix.can_share(net)
    pad = tokenizer.pad_token_id
    assert_same_scores(*both_paths(monkeypatch, lambda: score_examples(net, examples, pad, batch_size=6)))
    assert shared_runs


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_plan_covers_every_example_once_within_the_budget(data):
    n_prompts = data.draw(st.integers(1, 4))
    prompts = [tuple(range(10 * p, 10 * p + data.draw(st.integers(1, 6)))) for p in range(n_prompts)]
    examples = []
    for _ in range(data.draw(st.integers(0, 20))):
        prompt = data.draw(st.sampled_from(prompts))
        answer = tuple(range(100, 100 + data.draw(st.integers(1, 12))))
        examples.append(Example(prompt + answer, (IGNORE_INDEX,) * len(prompt) + answer))
    batch_size = data.draw(st.one_of(st.none(), st.integers(1, 8)))
    max_tokens = data.draw(st.one_of(st.none(), st.integers(1, 80)))
    plain, batches = prefix.plan(examples, batch_size, max_tokens)
    seen = plain + [i for b in batches for i in b.indices]
    assert sorted(seen) == list(range(len(examples)))
    for b in batches:
        assert batch_size is None or len(b.indices) <= batch_size
        assert max_tokens is None or len(b.indices) * b.width <= max_tokens
        assert b.width >= max(len(examples[i].input_ids) for i in b.indices)  # never below the plain batch's width
        assert sorted(set(b.groups)) == list(range(len(b.prefix_lengths)))
        firsts = [b.indices[b.groups.index(g)] for g in range(len(b.prefix_lengths))]
        assert len({examples[i].input_ids[:k] for i, k in zip(firsts, b.prefix_lengths)}) == len(firsts)  # distinct
        for i, g in zip(b.indices, b.groups):
            k = b.prefix_lengths[g]
            assert k == prefix.prefix_length(examples[i]) >= 1
            first = b.indices[b.groups.index(g)]
            assert examples[i].input_ids[:k] == examples[first].input_ids[:k]
