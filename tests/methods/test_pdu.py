"""PDU: the logit-margin forget term, the primal loss, and the dual variable as trainer state (one update per
optimizer step from the rank-averaged retain loss, warm-up, never below 0, checkpointed)."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.registry import METHODS


def test_forget_term_is_the_mean_squared_logit_margin_at_answer_positions(fitted_model, toy_batch):
    from unlearnkit.losses import logits_of, supervised_logits

    method = METHODS.build("pdu")
    forget, _ = method.forget_loss(fitted_model, toy_batch, None)
    logits, _ = supervised_logits(logits_of(fitted_model, toy_batch.forget), toy_batch.forget.labels)
    expected = ((logits.max(-1).values - logits.mean(-1)) ** 2).mean()
    assert forget.item() == pytest.approx(expected.item(), rel=1e-6) and forget.item() > 0


def test_forget_term_is_zero_when_every_logit_is_equal(tiny_model, toy_batch):
    import copy

    flat = copy.deepcopy(tiny_model)
    with torch.no_grad():
        flat.lm_head.weight.zero_()
    forget, _ = METHODS.build("pdu").forget_loss(flat, toy_batch, None)
    assert forget.item() == pytest.approx(0.0, abs=1e-10)


def test_the_primal_loss_is_forget_plus_dual_times_the_constraint(fitted_model, toy_batch):
    from unlearnkit.losses import nll

    method = METHODS.build("pdu", forget_weight=0.5, retain_weight=3.0, epsilon=0.2)
    out = method.loss(fitted_model, toy_batch, None)
    forget, _ = method.forget_loss(fitted_model, toy_batch, None)
    retain = nll(fitted_model, toy_batch.retain)
    assert out.total.item() == pytest.approx(0.5 * forget.item() + 3.0 * (retain.item() - 0.2), rel=1e-5)
    assert out.parts["dual"].item() == 3.0 and out.parts["constraint"].item() == pytest.approx(retain.item() - 0.2)


def test_the_dual_variable_ascends_on_the_constraint_after_warmup_and_stays_non_negative():
    method = METHODS.build("pdu", retain_weight=1.0, epsilon=0.5, dual_lr=2.0, dual_warmup_steps=1)
    method.setup(None)
    method.after_step({"retain": 3.0})  # warm-up: λ stays
    assert method._dual == 1.0
    method.after_step({"retain": 1.0})  # λ + η (L − ε) = 1 + 2·0.5
    assert method._dual == pytest.approx(2.0)
    method.after_step({"retain": 0.0})  # 2 + 2·(−0.5) = 1
    method.after_step({"retain": 0.0})  # 1 − 1 = 0
    method.after_step({"retain": 0.0})  # max(0, −1)
    assert method._dual == 0.0
    restored = METHODS.build("pdu")
    restored.load_state_dict(method.state_dict())
    assert (restored._dual, restored._steps) == (0.0, 5)


def test_training_moves_the_dual_variable_once_per_step_from_the_logged_retain_loss(train_tiny):
    method = METHODS.build("pdu", epsilon=0.0, dual_lr=0.5, retain_weight=1.0)
    run = train_tiny(method, 3, grad_accum=2)
    expected = 1.0
    for record in run.history:
        assert record["dual"] == pytest.approx(expected, rel=1e-6)  # the λ the step trained with
        expected = max(0.0, expected + 0.5 * record["retain"])
    assert method._dual == pytest.approx(expected, rel=1e-6)
