"""Gated representation edits (`unlearnkit.model.edits`): where they act, identities, KV cache, save/load."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearnkit.model.edits import (add_edit, edit_positions, edit_stack, edits_disabled, has_edits, load_edits,
                              only_edit_enabled, save_edits)
from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import prompt_end_positions, resolve_layers, tokens_in_cache


def logits(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids) if mask is None else mask).logits


def set_gate(edit, bias: float) -> None:
    """Gate weights 0 and bias b: g = σ(b) at every input (b = −1e4 gives exactly 0 in float32)."""
    with torch.no_grad():
        for module in edit.per_layer.values():
            last = module.gate if isinstance(module.gate, torch.nn.Linear) else module.gate[-1]
            last.weight.zero_()
            last.bias.fill_(bias)


@pytest.fixture
def ids():
    return torch.randint(3, 60, (2, 7), generator=torch.Generator().manual_seed(0))


def test_gate_forced_to_zero_reproduces_the_base_logits_exactly(tiny_model, ids):
    base = logits(tiny_model, ids)
    edit = add_edit(tiny_model, [0, 1], rank=4)
    set_gate(edit, -1e4)
    assert torch.equal(logits(tiny_model, ids), base)


def test_the_edit_acts_only_at_the_last_prompt_token_and_after(tiny_model, ids):
    base = logits(tiny_model, ids)
    set_gate(add_edit(tiny_model, [1], rank=4), 0.0)  # g = 0.5
    with edit_positions(tiny_model, torch.tensor([2, 4])):
        edited = logits(tiny_model, ids)
    diff = (edited - base).abs().amax(-1)  # (B, T)
    assert torch.all(diff[0, :2] == 0) and torch.all(diff[1, :4] == 0)
    assert diff[0, 2] > 0 and diff[1, 4] > 0
    # without explicit positions a fresh sequence is edited at its last attended token
    plain = (logits(tiny_model, ids) - base).abs().amax(-1)
    assert torch.all(plain[:, :-1] == 0) and torch.all(plain[:, -1] > 0)


def test_disabled_edits_and_the_edit_formula(tiny_model, ids):
    base = logits(tiny_model, ids)
    edit = add_edit(tiny_model, [1], rank=3)
    with edits_disabled(tiny_model):
        assert torch.equal(logits(tiny_model, ids), base)
    module = edit.per_layer["1"]
    h = torch.randn(5, 32)
    phi, gate = module(h)
    R = module.rotation.weight
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5)  # orthonormal rows
    expected = (h @ module.source.weight.T + module.source.bias - h @ R.T) @ R
    assert torch.allclose(phi, expected, atol=1e-5)
    assert torch.allclose(gate, torch.sigmoid(h @ module.gate.weight.T + module.gate.bias).squeeze(-1))


@pytest.mark.parametrize("cache", [None, "static"])
def test_generation_with_the_kv_cache_equals_recomputing_without_it(tiny_model, ids, cache):
    set_gate(add_edit(tiny_model, [0, 1], rank=4), 0.5)
    prompt = ids[:, :4]
    with torch.no_grad():
        cached = tiny_model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                     do_sample=False, pad_token_id=0, cache_implementation=cache)
        seq = prompt
        for _ in range(6):  # full recompute each step, edit pinned to the prompt's last token
            with edit_positions(tiny_model, torch.full((2,), 3)):
                step = tiny_model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, step], dim=1)
    assert torch.equal(cached, seq)
    with edits_disabled(tiny_model), torch.no_grad():
        plain = tiny_model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                    do_sample=False, pad_token_id=0)
    assert not torch.equal(plain, cached)  # the edit reached the decoded tokens through the cache


@pytest.mark.parametrize("keyword", ["past_key_values", "cache", None])
def test_tokens_in_cache_reads_the_cache_whatever_the_release_calls_it(tiny_model, ids, keyword):
    """transformers 5.24 renamed the forward's past_key_values to cache; the edit must see either."""
    from transformers import DynamicCache

    with torch.no_grad():
        cache = tiny_model(input_ids=ids[:, :5], use_cache=True).past_key_values
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 5
    if keyword is None:  # a release that passes cache_position says it directly
        assert tokens_in_cache((), {"cache_position": torch.tensor([5, 6])}) == 5
    else:
        assert tokens_in_cache((), {"input_ids": ids[:, 5:6], keyword: cache}) == 5
    assert tokens_in_cache((ids,), {"use_cache": True}) == 0  # no cache: a new sequence


def test_left_padded_generation_edits_each_rows_last_prompt_token(tiny_model):
    set_gate(add_edit(tiny_model, [1], rank=4), 0.5)
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[0, 0, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    with torch.no_grad():
        alone = tiny_model.generate(input_ids=short, attention_mask=torch.ones_like(short), max_new_tokens=4,
                                    do_sample=False, pad_token_id=0)[:, 3:]
        in_batch = tiny_model.generate(input_ids=padded, attention_mask=mask, max_new_tokens=4,
                                       do_sample=False, pad_token_id=0)[:, 5:]
    assert torch.equal(alone, in_batch)


def test_save_and_load_roundtrip_is_exact(tiny_model, _tiny_model_master, ids, tmp_path):
    edit = add_edit(tiny_model, [0, 1], rank=2, gate="mlp", gate_hidden=(8, 4))
    with torch.no_grad():
        for module in edit.per_layer.values():
            module.gate[-1].bias.fill_(0.3)
    assert save_edits(tiny_model, tmp_path)
    fresh = copy.deepcopy(_tiny_model_master)
    assert load_edits(fresh, tmp_path) and has_edits(fresh)
    assert torch.equal(logits(fresh, ids), logits(tiny_model, ids))
    assert not any(p.requires_grad for p in edit_stack(fresh).parameters())  # loaded edits are frozen
    assert not save_edits(copy.deepcopy(_tiny_model_master), tmp_path / "none")
    assert not load_edits(copy.deepcopy(_tiny_model_master), tmp_path / "none")


def test_a_deep_copy_gets_its_own_edits(tiny_model, ids):
    edit = add_edit(tiny_model, [1], rank=4)
    set_gate(edit, 0.0)
    twin = copy.deepcopy(tiny_model)
    before = logits(twin, ids)
    set_gate(edit, -1e4)  # change the original only
    assert torch.equal(logits(twin, ids), before)
    assert not torch.equal(logits(tiny_model, ids), before)
    assert len(twin._forward_pre_hooks) == 1 and len(tiny_model._forward_pre_hooks) == 1


def test_several_edits_are_summed_with_the_sequential_scale(tiny_model, ids):
    base = logits(tiny_model, ids)
    first = add_edit(tiny_model, [1], rank=2)
    set_gate(first, 0.0)
    with torch.no_grad():
        only_first = logits(tiny_model, ids) - base
    second = add_edit(tiny_model, [1], rank=2)
    set_gate(second, -1e4)  # contributes nothing, but G = 2 scales the first by 0.6·2 + 0.6
    stack = edit_stack(tiny_model)
    assert stack.scale() == pytest.approx(1.8)
    with only_edit_enabled(tiny_model, first):
        assert stack.scale() == 1.0
        assert torch.allclose(logits(tiny_model, ids) - base, only_first, atol=1e-6)
    assert first.enabled and second.enabled  # restored


def test_prompt_end_positions_and_layer_resolution():
    labels = torch.tensor([[-100, -100, -100, 5, 6], [-100, 7, 8, 9, -100], [-100, -100, -100, -100, -100]])
    assert prompt_end_positions(labels).tolist() == [2, 0, 4]
    assert resolve_layers([0.65, 0.8, 1.0], 32) == [20, 25, 31]
    assert resolve_layers([0.65, 0.8, 1.0], 4) == [2, 3]
    assert resolve_layers([-1, 0], 4) == [3, 0]
    with pytest.raises(UnlearnError, match="does not exist"):
        resolve_layers([7], 4)
    with pytest.raises(UnlearnError, match="outside"):
        resolve_layers([1.5], 4)
