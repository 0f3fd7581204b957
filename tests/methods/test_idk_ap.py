"""IDK+AP: NLL of IDK answers on forget questions plus the answer-preservation term
L_AP = −(1/β)·mean log σ(β·(log π(y_r|x_r) − log π(y_idk|x_r))), scored by the model itself (no reference).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.data.batch import UnlearnBatch, collate
from unlearnkit.losses import nll
from unlearnkit.methods.idk_ap import IDKAP, with_answers_of
from unlearnkit.model import LoraSpec, wrap_lora
from unlearnkit.registry import METHODS


def supervised_counts(tokens) -> torch.Tensor:
    return (tokens.labels[:, 1:] != -100).sum(-1).double()


def test_with_answers_of_joins_each_prompt_with_the_other_rows_answer(make_example):
    prompts = collate([make_example([3, 4], [41, 42]), make_example([8], [43, 44, 45])], pad_id=0)
    answers = collate([make_example([5, 6, 7], [16, 17]), make_example([9, 10], [18])], pad_id=0)
    joined = with_answers_of(prompts, answers)
    assert joined.input_ids.tolist() == [[1, 3, 4, 16, 17, 2], [1, 8, 18, 2, 0, 0]]
    assert joined.labels.tolist() == [[-100, -100, -100, 16, 17, 2], [-100, -100, 18, 2, -100, -100]]
    assert joined.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_both_terms_from_known_answer_lengths_under_a_uniform_model(uniform_model, toy_batch, beta):
    vocab = 64
    retain_idk = with_answers_of(toy_batch.retain, toy_batch.extra["idk"])
    # log π(y|x) = −n·log V for an answer of n supervised tokens, so the margin is (n_idk − n_r)·log V
    margin = (supervised_counts(retain_idk) - supervised_counts(toy_batch.retain)) * math.log(vocab)
    expected_ap = (F.softplus(-beta * margin).mean() / beta).item()
    out = IDKAP(beta=beta).loss(uniform_model(vocab), toy_batch, None)
    assert out.parts["forget"].item() == pytest.approx(math.log(vocab), abs=1e-6)
    assert out.parts["retain"].item() == pytest.approx(expected_ap, rel=1e-6)
    assert out.parts["ap_margin"].item() == pytest.approx(margin.mean().item(), rel=1e-6)
    assert out.total.item() == pytest.approx(math.log(vocab) + expected_ap, rel=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ap_is_log2_over_beta_when_the_idk_answer_is_the_retain_answer(fitted_model, toy_batch, beta):
    # the "IDK" view carries the retain answers, so y_idk = y_r on every retain question: margin 0
    retain_answers = with_answers_of(toy_batch.forget, toy_batch.retain)
    same = UnlearnBatch(toy_batch.forget, toy_batch.retain, {"idk": retain_answers})
    out = IDKAP(beta=beta).loss(fitted_model, same, None)
    assert out.parts["ap_margin"].item() == pytest.approx(0.0, abs=1e-4)
    assert out.parts["retain"].item() == pytest.approx(math.log(2) / beta, rel=1e-5)


def test_with_retain_weight_zero_it_is_idk(fitted_model, toy_batch):
    method = IDKAP(retain_weight=0.0)
    assert len(method.loss_terms(fitted_model, toy_batch, None)) == 1
    out = method.loss(fitted_model, toy_batch, None)
    assert out.total.item() == pytest.approx(nll(fitted_model, toy_batch.extra["idk"]).item(), rel=1e-6)


def test_the_ap_term_alone_raises_retain_answers_over_idk_answers(fitted_model, toy_batch, train_tiny):
    method = IDKAP(forget_weight=0.0)
    with torch.no_grad():
        before = method.answer_preservation(fitted_model, toy_batch)[1].item()
    run = train_tiny(method, steps=5, model=fitted_model)
    with torch.no_grad():
        after = method.answer_preservation(run.model, toy_batch)[1].item()
    assert after > before + 1.0


def test_defaults_are_the_authors_and_no_reference_is_built(train_tiny, references):
    method = METHODS.build("idk_ap")
    assert (method.beta, method.forget_weight, method.retain_weight) == (0.1, 1.0, 1.0)
    assert method.needs_reference() is None and method.extra_views == ("idk",) and method.needs_retain()
    assert train_tiny(method, 1).stopped is None
    assert references == []  # neither a copy nor a log-prob cache


def test_trains_as_lora_with_only_adapters_moving(tiny_model, train_tiny, references):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    start = {n: p.detach().clone() for n, p in lora.named_parameters()}
    run = train_tiny(METHODS.build("idk_ap"), steps=2, model=lora)
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, start[n])}
    assert run.stopped is None and changed and all("lora_" in n for n in changed)
    assert references == []
