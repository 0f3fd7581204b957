"""Sharpness-aware unlearning (`train.sam_rho`): ρ = 0 is the plain step, and with ρ > 0 the step's gradient is
the forget term's gradient at θ + ρ·g_f/‖g_f‖ plus the retain term's at θ — for several bases."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from unlearnkit.data.pairing import UnlearnData, epoch_batches
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import METHODS

ADAM_BETA1 = 0.9  # after one step AdamW's exp_avg is (1 − β1)·grad
BASES = ["grad_ascent", "grad_diff", "npo", "simnpo"]


def step_one_gradient(out_dir) -> dict[str, torch.Tensor]:
    state = load_file(str(out_dir / "checkpoints" / "step-1" / "trainer_state.safetensors"))
    return {k[len("optim."):-len(".exp_avg")]: v / (1 - ADAM_BETA1) for k, v in state.items() if k.endswith(".exp_avg")}


@pytest.mark.parametrize("name", BASES)
def test_rho_zero_is_the_plain_step(name, train_tiny):
    plain = train_tiny(METHODS.build(name), 3)
    sam = train_tiny(METHODS.build(name), 3, sam_rho=0.0)
    assert sam.losses == plain.losses


@pytest.mark.parametrize("name", BASES)
def test_the_forget_gradient_is_taken_at_the_ascent_point(name, tiny_model, toy_data, train_tiny, tmp_path):
    rho = 0.05
    data = UnlearnData(toy_data.forget[:4], (toy_data.retain or [])[:4] or None, pad_id=toy_data.pad_id)
    run = train_tiny(METHODS.build(name), 1, data=data, batch_size=4, sam_rho=rho, max_grad_norm=None,
                     save_every=1, out_dir=tmp_path)
    got = step_one_gradient(tmp_path)

    method = METHODS.build(name)
    method.setup(data)
    from unlearnkit.train.reference import Reference

    ref = Reference.from_model(tiny_model) if method.needs_reference() else None
    batch = next(epoch_batches(data, 4, 0, 0, use_retain=method.needs_retain()))
    model = copy.deepcopy(tiny_model)
    terms = method.loss_terms(model, batch, ref)
    params = list(model.parameters())
    g_forget = torch.autograd.grad(terms[0]().total, params)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in g_forget]))
    with torch.no_grad():
        for p, g in zip(params, g_forget):
            p.add_(g * rho / norm)
    at_ascent = torch.autograd.grad(terms[0]().total, params)
    with torch.no_grad():
        for p, g in zip(params, g_forget):
            p.sub_(g * rho / norm)
    expected = list(at_ascent)
    for term in terms[1:]:  # the retain term, at θ
        expected = [a + b for a, b in zip(expected, torch.autograd.grad(term().total, params, allow_unused=True))]
    plain_forget = dict(zip([n for n, _ in model.named_parameters()], g_forget))
    for (key, p), want in zip(model.named_parameters(), expected):
        torch.testing.assert_close(got[key], want, atol=1e-6, rtol=1e-4, msg=lambda m, k=key: f"{k}: {m}")
    assert any(not torch.allclose(got[k], plain_forget[k], atol=1e-6) for k in plain_forget)  # ρ moved the point
    assert run.stopped is None


def test_sam_with_gradient_accumulation_is_refused(train_tiny):
    with pytest.raises(UnlearnError, match="train.sam_rho needs train.grad_accum=1"):
        train_tiny(METHODS.build("grad_diff"), 1, sam_rho=0.05, grad_accum=2)


def test_sam_rho_is_a_recipe_field_with_a_range():
    from unlearnkit.recipe import load_recipe

    assert load_recipe("default", ["train.sam_rho=0.01"]).train.sam_rho == 0.01
    with pytest.raises(UnlearnError, match="sam_rho"):
        load_recipe("default", ["train.sam_rho=-1"])
