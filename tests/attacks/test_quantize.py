"""Fake quantization of a copy: RTN error bound, untouched original, at most 2^k values per channel,
embeddings / norms / GRUN edits left alone unless asked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnkit.attacks.quantize import quantize_model, quantize_tensor
from unlearnkit.model.edits import add_edit


def _linears(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


@pytest.mark.parametrize("bits", [8, 4])
def test_rounding_error_and_grid(tiny_model, bits):
    original = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    quantized = quantize_model(tiny_model, bits)
    levels = 2 ** (bits - 1) - 1
    changed = 0
    for name, module in _linears(quantized).items():
        w = original[f"{name}.weight"]
        q = module.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / levels
        assert torch.all((q - w).abs() <= scale / 2 + 1e-7), name  # round to nearest: ≤ half a step
        for row in q:
            assert row.unique().numel() <= 2 ** bits
        changed += int(not torch.equal(q, w))
    assert changed > 0
    for key, value in tiny_model.state_dict().items():  # the original model is untouched
        assert torch.equal(value, original[key]), key


def test_eight_bits_error_bound_per_element():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    w[3] = 0.0  # an all-zero channel stays zero
    q, scale = quantize_tensor(w, 8)
    assert torch.all((q - w).abs() <= scale.unsqueeze(1) / 2 + 1e-7)
    assert torch.all(q[3] == 0)
    assert torch.allclose(q.abs().amax(dim=1), w.abs().amax(dim=1))  # the extreme value is on the grid
    steps = q / torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(1)
    assert torch.allclose(steps, steps.round(), atol=1e-4)


def test_embeddings_and_norms_only_with_the_flag(tiny_model):
    embeddings = [m for m in tiny_model.modules() if isinstance(m, nn.Embedding)]
    norms = {n: p.clone() for n, p in tiny_model.named_parameters() if "norm" in n}
    plain = quantize_model(tiny_model, 4)
    for n, p in plain.named_parameters():
        if "norm" in n:
            assert torch.equal(p, norms[n])
    emb_plain = [m for m in plain.modules() if isinstance(m, nn.Embedding)]
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(embeddings, emb_plain))
    flagged = quantize_model(tiny_model, 4, include_embeddings=True)
    emb_flagged = [m for m in flagged.modules() if isinstance(m, nn.Embedding)]
    assert any(not torch.equal(a.weight, b.weight) for a, b in zip(embeddings, emb_flagged))


def test_grun_edits_are_kept_and_not_rounded_by_default(tiny_model):
    add_edit(tiny_model, layers=[1], rank=2)
    edit_params = {n: p.clone() for n, p in tiny_model.named_parameters() if "unlearn_edits" in n}
    assert edit_params
    quantized = quantize_model(tiny_model, 4)
    got = {n: p for n, p in quantized.named_parameters() if "unlearn_edits" in n}
    assert set(got) == set(edit_params)
    assert all(torch.equal(got[n], edit_params[n]) for n in got)  # the edit survives the copy, unrounded
    rounded = quantize_model(tiny_model, 4, include_edits=True)
    assert any(not torch.equal(p, edit_params[n]) for n, p in rounded.named_parameters() if n in edit_params)


def test_bad_bits_are_rejected(tiny_model):
    with pytest.raises(ValueError, match="bits"):
        quantize_model(tiny_model, 16)
