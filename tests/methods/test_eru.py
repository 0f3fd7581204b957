"""ERU (reconstructed): the elastic reward's limits, the λ rules and the two inner attacks.

λ = 1 without an inner attack is NPO (same loss, same gradients); λ = 0 is the reference-free
(SimNPO) form; the refusal direction is unit-norm and ablating it removes that component; RFA is
applied with probability p; PGD stays in its ε-ball and never moves or accumulates into parameters.
"""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.data.batch import collate
from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import ablate_directions, capture_outputs, gather_positions, prompt_end_positions
from unlearnkit.losses import token_logprobs
from unlearnkit.methods.eru import ERU
from unlearnkit.methods.inner_attacks import latent_pgd, project_to_ball, refusal_directions
from unlearnkit.methods.npo import NPO
from unlearnkit.train.reference import Reference
from unlearnkit.registry import METHODS


def gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def backward_and_grads(method, model, batch, ref):
    model.zero_grad(set_to_none=True)
    out = method.loss(model, batch, ref)
    out.total.backward()
    return out, gradients(model)


def test_lambda_one_without_attack_is_npo_loss_and_gradients(fitted_model, tiny_model, toy_batch):
    ref = Reference.from_model(tiny_model)  # a reference other than the model: log-ratios are not 0
    npo, npo_grads = backward_and_grads(NPO(beta=0.2), fitted_model, toy_batch, ref)
    eru_method = ERU(beta=0.2, mix_weight=1.0, inner_attack="none")
    eru, eru_grads = backward_and_grads(eru_method, fitted_model, toy_batch, ref)
    assert abs(npo.parts["log_ratio"].item()) > 1.0
    assert torch.equal(eru.total, npo.total)
    assert torch.equal(eru.parts["forget"], npo.parts["forget"])
    assert npo_grads.keys() == eru_grads.keys() and npo_grads
    for name, grad in npo_grads.items():
        assert torch.equal(eru_grads[name], grad), name


@pytest.mark.parametrize("beta, gamma", [(2.5, 0.0), (0.5, 0.3)])
def test_lambda_zero_is_the_reference_free_form(fitted_model, tiny_model, toy_batch, beta, gamma):
    ref = Reference.from_model(tiny_model)
    out = ERU(beta=beta, gamma=gamma, mix_weight=0.0, inner_attack="none", retain_weight=0.0).loss(
        fitted_model, toy_batch, ref)
    with torch.no_grad():
        logits = fitted_model(input_ids=toy_batch.forget.input_ids).logits
        picked, mask = token_logprobs(logits, toy_batch.forget.labels)
        mean_nll = -picked.sum(-1) / mask.sum(-1)
    expected = -(2 / beta) * torch.stack([torch.log(torch.sigmoid(beta * n - gamma)) for n in mean_nll]).mean()
    assert out.parts["forget"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_fixed_lambda_mixes_the_two_rewards(fitted_model, tiny_model, toy_batch):
    ref = Reference.from_model(tiny_model)
    beta, mix = 0.3, 0.25
    out = ERU(beta=beta, mix_weight=mix, inner_attack="none").loss(fitted_model, toy_batch, ref)
    with torch.no_grad():
        ids, labels = toy_batch.forget.input_ids, toy_batch.forget.labels
        picked, mask = token_logprobs(fitted_model(input_ids=ids).logits, labels)
        ref_picked, _ = token_logprobs(tiny_model(input_ids=ids).logits, labels)
    logp, ref_logp = picked.sum(-1), ref_picked.sum(-1)
    reward = mix * beta * (logp - ref_logp) + (1 - mix) * beta * logp / mask.sum(-1)
    expected = (2 / beta) * sum(math.log1p(math.exp(r)) for r in reward.tolist()) / len(reward)
    assert out.parts["forget"].item() == pytest.approx(expected, rel=1e-5)
    assert out.parts["reward"].item() == pytest.approx(reward.mean().item(), rel=1e-5)


def test_linear_schedule_goes_from_one_to_zero_over_mix_steps(tiny_model, toy_batch):
    ref = Reference.from_model(tiny_model)
    method = ERU(mix="linear", mix_steps=4, inner_attack="none")
    mixes = []
    for _ in range(6):  # two micro-batches per optimizer step: t counts steps, not loss calls
        mixes += [method.loss(tiny_model, toy_batch, ref).parts["mix"].item() for _ in range(2)]
        method.after_step({})
    assert mixes == pytest.approx([1.0, 1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0, 0.0, 0.0])
    method.setup(None)  # a new run starts the schedule again
    assert method.loss(tiny_model, toy_batch, ref).parts["mix"].item() == 1.0


def test_confidence_lambda_is_a_sigmoid_of_the_reference_nll(tiny_model, toy_batch):
    ref = Reference.from_model(tiny_model)
    method = ERU(mix="confidence", mix_scale=2.0, mix_margin=3.0, inner_attack="none")
    out = method.loss(tiny_model, toy_batch, ref)
    ref_mean_nll = -ref.sequence_logprob(toy_batch.forget, mean=True)
    expected = torch.sigmoid(2.0 * (ref_mean_nll - 3.0)).mean()
    assert out.parts["mix"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_refusal_direction_is_unit_and_ablation_removes_its_component(fitted_model, toy_data):
    forget, retain = collate(toy_data.forget, toy_data.pad_id), collate(toy_data.retain, toy_data.pad_id)
    directions = refusal_directions(fitted_model, forget, retain, [0, 1])
    with torch.no_grad(), capture_outputs(fitted_model, [0, 1]) as clean:
        fitted_model(input_ids=forget.input_ids, attention_mask=forget.attention_mask)
        clean = dict(clean)
    for layer, direction in directions.items():
        assert direction.norm().item() == pytest.approx(1.0, abs=1e-6)
        # the direction is the normalised difference of mean last-prompt-token block outputs
        with torch.no_grad(), capture_outputs(fitted_model, [layer]) as retained:
            fitted_model(input_ids=retain.input_ids, attention_mask=retain.attention_mask)
        diff = (gather_positions(clean[layer], prompt_end_positions(forget.labels)).mean(0)
                - gather_positions(retained[layer], prompt_end_positions(retain.labels)).mean(0))
        torch.testing.assert_close(direction, diff / diff.norm())
        assert (clean[layer] @ direction).abs().max() > 1e-2  # there was a component to remove
    with torch.no_grad(), ablate_directions(fitted_model, directions), capture_outputs(fitted_model, [0, 1]) as ablated:
        fitted_model(input_ids=forget.input_ids, attention_mask=forget.attention_mask)
    for layer, direction in directions.items():
        assert (ablated[layer] @ direction).abs().max().item() < 1e-5


@pytest.mark.parametrize("inner_attack", ["rfa", "pgd"])
def test_the_inner_attack_is_applied_with_probability_p(fitted_model, toy_data, toy_batch, inner_attack):
    ref = Reference.from_model(fitted_model)
    clean = ERU(inner_attack="none").loss(fitted_model, toy_batch, ref).total.item()

    never = ERU(inner_attack=inner_attack, attack_prob=0.0)
    never.setup(toy_data)
    outs = [never.loss(fitted_model, toy_batch, ref) for _ in range(4)]
    assert [o.parts["attacked"].item() for o in outs] == [0.0] * 4
    assert all(o.total.item() == clean for o in outs)

    always = ERU(inner_attack=inner_attack, attack_prob=1.0)
    always.setup(toy_data)
    outs = [always.loss(fitted_model, toy_batch, ref) for _ in range(4)]
    assert [o.parts["attacked"].item() for o in outs] == [1.0] * 4
    assert all(abs(o.total.item() - clean) > 1e-4 for o in outs)
    # the retain term is computed on the clean pass
    assert all(o.parts["retain"].item() == pytest.approx(outs[0].parts["retain"].item()) for o in outs)

    half = ERU(inner_attack=inner_attack, attack_prob=0.5, seed=3)
    half.setup(toy_data)
    flags = [half.loss(fitted_model, toy_batch, ref).parts["attacked"].item() for _ in range(40)]
    assert 8 <= sum(flags) <= 32


def test_rfa_directions_refresh_every_k_steps_from_the_whole_data(fitted_model, toy_data, toy_batch, monkeypatch):
    import unlearnkit.methods.eru as eru_module

    sizes = []

    def spy(model, forget, retain, layers):
        sizes.append((len(forget), len(retain)))
        return refusal_directions(model, forget, retain, layers)

    monkeypatch.setattr(eru_module, "refusal_directions", spy)
    method = ERU(attack_prob=1.0, refresh_every=3, contrast_rows=6)
    method.setup(toy_data)
    ref = Reference.from_model(fitted_model)
    for _ in range(7):
        method.loss(fitted_model, toy_batch, ref)
        method.loss(fitted_model, toy_batch, ref)  # a second micro-batch of the step: no refresh of its own
        method.after_step({})
    assert sizes == [(6, 6)] * 3  # steps 0, 3 and 6; 6 rows per side drawn from the 8 + 8 rows


def test_pgd_stays_in_the_ball_raises_the_likelihood_and_moves_no_parameter(fitted_model, toy_batch):
    start = {n: p.detach().clone() for n, p in fitted_model.named_parameters()}
    fitted_model.zero_grad(set_to_none=True)
    radius = 0.5
    deltas = latent_pgd(fitted_model, toy_batch.forget, [0, 1], radius=radius, steps=3, step_size=1.0)

    assert all(p.grad is None for p in fitted_model.parameters())
    assert all(torch.equal(p, start[n]) for n, p in fitted_model.named_parameters())
    for delta in deltas.values():
        assert not delta.requires_grad
        norms = delta.norm(dim=-1)
        assert norms.max().item() <= radius * (1 + 1e-5)
        assert norms.max().item() == pytest.approx(radius, rel=1e-4)  # full steps reach the boundary
    from unlearnkit.model.hooks import add_to_outputs
    from unlearnkit.losses import nll

    with torch.no_grad():
        before = nll(fitted_model, toy_batch.forget).item()
        with add_to_outputs(fitted_model, deltas):
            after = nll(fitted_model, toy_batch.forget).item()
    assert after < before  # the attacker made the forget answers more likely


def test_project_to_ball_is_per_token():
    delta = torch.tensor([[[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]])
    projected = project_to_ball(delta, 1.0)
    torch.testing.assert_close(projected, torch.tensor([[[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]]))
    assert torch.equal(project_to_ball(delta, 0.0), torch.zeros_like(delta))


@pytest.mark.parametrize("inner_attack", ["rfa", "pgd"])
def test_one_instance_trained_twice_repeats_its_run(inner_attack, train_tiny):
    # `setup` resets the RNG, the call count and the directions, so a method object can be reused.
    method = ERU(inner_attack=inner_attack)
    first, second = train_tiny(method, steps=3, seed=1), train_tiny(method, steps=3, seed=1)
    assert first.losses == second.losses
    other = train_tiny(ERU(inner_attack=inner_attack, seed=5), steps=6, seed=1)
    assert other.losses != train_tiny(method, steps=6, seed=1).losses  # the method's seed matters


@pytest.mark.parametrize("field, value", [("inner_attack", "lat"), ("mix", "cosine"), ("attack_prob", 1.5),
                                          ("refresh_every", 0), ("mix_weight", -0.1)])
def test_bad_values_are_user_errors_naming_the_field(field, value):
    with pytest.raises(UnlearnError, match=field):
        METHODS.build("eru", **{field: value})


def test_attack_layers_resolve_to_a_range(tiny_model):
    assert ERU().attacked_layers(tiny_model) == [0, 1]  # (0.25, 1.0) of 2 blocks: round(0.25) = 0 .. 1
    assert ERU(attack_layers=(1, 1)).attacked_layers(tiny_model) == [1]
    with pytest.raises(UnlearnError, match="attack_layers"):
        ERU(attack_layers=(1.0, 0)).attacked_layers(tiny_model)


def test_rfa_without_retain_rows_is_a_user_error(fitted_model, toy_batch):
    from unlearnkit.data.batch import UnlearnBatch

    ref = Reference.from_model(fitted_model)
    with pytest.raises(UnlearnError, match="retain"):
        ERU(attack_prob=1.0).loss(fitted_model, UnlearnBatch(toy_batch.forget), ref)
