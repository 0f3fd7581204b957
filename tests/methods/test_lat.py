"""Targeted LAT: without an attack it is its base objective exactly; the attack stays in its ball, restores the
forget answers, and leaves no hook behind; the away loss by hand; what it asks of the reference."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.errors import UnlearnError
from unlearnkit.losses import logits_of, sequence_logprob
from unlearnkit.methods.grad_diff import GradDiff
from unlearnkit.methods.lat import LAT, away_loss
from unlearnkit.methods.npo import NPO
from unlearnkit.model.hooks import add_to_outputs
from unlearnkit.registry import METHODS
from unlearnkit.train.reference import Reference


def exactly(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("no_attack", [{"pgd_radius": 0.0}, {"pgd_steps": 0}])
def test_without_an_attack_lat_is_its_base_objective_exactly(fitted_model, toy_batch, no_attack):
    ref = Reference.from_model(fitted_model)
    with torch.no_grad():
        fitted_model.model.layers[0].mlp.down_proj.weight.mul_(1.1)  # π_θ ≠ π_ref: a non-trivial NPO log-ratio
    for objective, base in (("ga", GradDiff()), ("npo", NPO(beta=0.3))):
        lat = LAT(forget_objective=objective, beta=0.3, **no_attack).loss(fitted_model, toy_batch, ref)
        want = base.loss(fitted_model, toy_batch, ref)
        exactly(lat.total, want.total)
        exactly(lat.parts["forget"], want.parts["forget"])
        exactly(lat.parts["retain"], want.parts["retain"])
    away = LAT(retain_weight=0.0, **no_attack).loss(fitted_model, toy_batch, ref)
    exactly(away.total, away_loss(logits_of(fitted_model, toy_batch.forget), toy_batch.forget.labels))


def test_the_away_loss_by_hand(fixed_logits, one_row):
    z = torch.zeros(1, 3, 4)
    z[0, 0, 2] = 2.0  # position 0 predicts token 2 with p = e²/(e² + 3)
    batch = one_row([-100, 2, 1])
    p0 = torch.tensor(2.0).exp() / (torch.tensor(2.0).exp() + 3)
    want = (-torch.log1p(-p0) - torch.log1p(torch.tensor(-0.25))) / 2
    got = away_loss(logits_of(fixed_logits(z), batch.forget), batch.forget.labels)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert torch.isfinite(away_loss(torch.full((1, 3, 4), -1e4).index_fill(-1, torch.tensor([1]), 1e4),
                                    torch.tensor([[-100, 1, 1]])))  # p = 1: clamped, finite


@pytest.mark.parametrize("radius", [0.5, 4.0])
def test_the_perturbation_stays_in_the_ball_at_the_chosen_layers(fitted_model, toy_batch, radius):
    method = LAT(pgd_radius=radius, layers=(0, 1))
    deltas = method.attack(fitted_model, toy_batch.forget)
    assert sorted(deltas) == [0, 1]
    for delta in deltas.values():
        assert delta.shape == (*toy_batch.forget.input_ids.shape, 32) and not delta.requires_grad
        norms = delta.norm(dim=-1)
        assert norms.max().item() <= radius * (1 + 1e-5)
        assert norms.max().item() >= 0.99 * radius  # normalised steps of 0.5ε reach the boundary


def test_the_attack_raises_the_forget_likelihood(fitted_model, toy_batch):
    method = LAT(pgd_radius=4.0)
    forget = toy_batch.forget
    with torch.no_grad():
        clean = sequence_logprob(fitted_model, forget)
        with add_to_outputs(fitted_model, method.attack(fitted_model, forget)):
            attacked = sequence_logprob(fitted_model, forget)
    assert (attacked > clean).all()
    assert attacked.sum() - clean.sum() > 0.5


def test_the_forget_term_is_computed_under_the_attack(fitted_model, toy_batch):
    ref = Reference.from_model(fitted_model)
    attacked = LAT(forget_objective="ga", retain_weight=0.0).loss(fitted_model, toy_batch, ref)
    clean = GradDiff(retain_weight=0.0).loss(fitted_model, toy_batch, ref)
    assert attacked.parts["attacked_nll"].item() == pytest.approx(-attacked.total.item(), rel=1e-6)
    assert attacked.parts["attacked_nll"].item() < clean.parts["forget_nll"].item() - 0.05


def test_the_loss_leaves_no_hook_and_no_parameter_gradient_from_the_attack(fitted_model, toy_batch):
    ref = Reference.from_model(fitted_model)
    with torch.no_grad():
        before = logits_of(fitted_model, toy_batch.forget)
    hooks = [len(block._forward_hooks) for block in fitted_model.model.layers]
    out = LAT().loss(fitted_model, toy_batch, ref)
    assert out.parts["delta_norm"].item() == pytest.approx(4.0, rel=1e-5)
    assert [len(block._forward_hooks) for block in fitted_model.model.layers] == hooks
    assert all(p.grad is None for p in fitted_model.parameters())  # PGD differentiates δ only
    with torch.no_grad():
        exactly(logits_of(fitted_model, toy_batch.forget), before)


def test_what_it_asks_of_the_reference_and_bad_values():
    assert METHODS.build("lat").needs_reference() is None
    assert METHODS.build("lat", forget_objective="npo").needs_reference() == "logprobs"
    assert METHODS.build("lat", retain_loss="kl").needs_reference() == "model"
    assert METHODS.build("lat").state_dict() == {}
    with pytest.raises(UnlearnError, match="forget_objective"):
        METHODS.build("lat", forget_objective="rmu")
    for field, value in (("pgd_radius", -1.0), ("pgd_steps", -1), ("layers", ()), ("layers", (1.5,))):
        with pytest.raises(UnlearnError, match=field):
            METHODS.build("lat", **{field: value})


def test_training_lowers_the_forget_likelihood_and_keeps_retain(fitted_model, train_tiny, toy_batch):
    run = train_tiny(METHODS.build("lat"), 8, model=fitted_model, lr=1e-2)
    with torch.no_grad():
        forget = [sequence_logprob(m, toy_batch.forget).mean().item() for m in (fitted_model, run.model)]
        retain = [sequence_logprob(m, toy_batch.retain).mean().item() for m in (fitted_model, run.model)]
    assert forget[1] < forget[0] - 1.0
    assert retain[1] > retain[0] - 1.0
