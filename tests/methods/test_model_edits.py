"""Multi-phase model edits (task_vector, SKU) and the task arithmetic they share.

Identities: a task vector with α = 0 is the identity and with α = 1 is 2θ0 − θ_ft, bit for bit;
integer and bool buffers are never touched; the LoRA path merges into a plain model with the same
τ semantics. SKU: its KL term ignores padding, its random-answer examples supervise exactly the
random answer tokens, and its preservation divergence *raises* KL(P_θ0 ‖ P_θ) on retain data.
The ModelEdit contract (finite, deterministic, forget NLL rises, bad values are user errors) and a
golden 10-step curve of each edit's training phase run over every registered ModelEdit.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from unlearnkit.data.batch import IGNORE_INDEX, TokenBatch, UnlearnBatch, collate
from unlearnkit.errors import UnlearnError
from unlearnkit.losses import kl_to_reference, logits_of, nll
from unlearnkit.methods.base import ModelEdit
from unlearnkit.methods.finetune import Finetune
from unlearnkit.methods.sku import HarmfulKnowledge, random_answer_batch
from unlearnkit.methods.task_vector import TaskVector
from unlearnkit.model import LoraSpec, merge_lora, wrap_lora
from unlearnkit.train.reference import Reference, is_peft_model
from unlearnkit.registry import METHODS
from unlearnkit.model.task_arithmetic import float_tensors, negate_in_place, snapshot, task_vector
from unlearnkit.train import TrainConfig, train

EDITS = [n for n in METHODS.names() if issubclass(METHODS.get(n), ModelEdit)]


def settings(steps: int = 4, **overrides) -> TrainConfig:
    return TrainConfig(**{"steps": steps, "lr": 1e-2, "batch_size": 4, "progress": False, **overrides})


def weights(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in float_tensors(model).items()}


def set_nll(model, examples, pad_id) -> float:
    with torch.no_grad():
        return nll(model, collate(examples, pad_id)).item()


def test_registry_holds_both_edits():
    assert {"task_vector", "sku"} <= set(EDITS)


# ------------------------------------------------------------------------------- task arithmetic


def test_task_vector_with_alpha_zero_is_the_identity(tiny_model, toy_data):
    start = weights(tiny_model)
    result = TaskVector(alpha=0.0).apply(tiny_model, toy_data, settings())
    assert result.steps == 4 and result.losses[-1] < result.losses[0]  # the fine-tune did move
    after = weights(result.model)
    assert after.keys() == start.keys()
    assert all(torch.equal(after[n], start[n]) for n in start)


def test_task_vector_with_alpha_one_is_two_theta0_minus_finetuned(tiny_model, toy_data):
    start = weights(tiny_model)
    finetuned = weights(train(copy.deepcopy(tiny_model), Finetune(), toy_data, settings()).model)
    edited = weights(TaskVector(alpha=1.0).apply(tiny_model, toy_data, settings()).model)
    assert any(not torch.equal(finetuned[n], start[n]) for n in start)
    for name in start:
        assert torch.equal(edited[name], 2 * start[name] - finetuned[name]), name


def test_arithmetic_skips_integer_and_bool_buffers_and_round_trips(tiny_model):
    tiny_model.register_buffer("counter", torch.tensor([3, 4]))
    tiny_model.register_buffer("flags", torch.tensor([True, False]))
    base = snapshot(tiny_model)
    assert "counter" not in base and "flags" not in base
    assert all(t.device.type == "cpu" and t.is_floating_point() for t in base.values())
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        tiny_model.counter.fill_(7)
    finetuned = weights(tiny_model)
    tau = task_vector(tiny_model, base)
    assert all(torch.allclose(tau[n], finetuned[n] - base[n]) for n in base)

    negate_in_place(tiny_model, base, -1.0)  # θ0 + τ: the fine-tuned weights again, exactly
    assert all(torch.equal(t, finetuned[n]) for n, t in float_tensors(tiny_model).items())
    negate_in_place(tiny_model, base, 2.0)
    for name, tensor in float_tensors(tiny_model).items():
        torch.testing.assert_close(tensor, base[name] - 2 * tau[name], rtol=0, atol=1e-6)
    assert tiny_model.counter.tolist() == [7, 7] and tiny_model.flags.tolist() == [True, False]


def lora_copy(model):
    torch.manual_seed(0)  # LoRA A is initialised from the global RNG
    return wrap_lora(copy.deepcopy(model), LoraSpec(r=4))


def test_task_vector_on_lora_gives_a_plain_model_with_the_same_tau_semantics(tiny_model, toy_data):
    start = weights(tiny_model)
    merged = weights(merge_lora(train(lora_copy(tiny_model), Finetune(), toy_data, settings()).model))
    result = TaskVector(alpha=1.0).apply(lora_copy(tiny_model), toy_data, settings())

    assert not is_peft_model(result.model) and type(result.model) is type(tiny_model)
    assert 0 < result.trainable_params < result.total_params / 5  # the adapters only
    edited = weights(result.model)
    assert edited.keys() == start.keys()  # plain names, no adapter tensors
    changed = [n for n in start if not torch.equal(merged[n], start[n])]
    assert changed and all("proj" in n for n in changed) and "lm_head.weight" not in changed
    for name in start:  # θ0 − (θ_merged − θ0); weights LoRA did not touch stay θ0
        assert torch.equal(edited[name], 2 * start[name] - merged[name]), name


# ------------------------------------------------------------------------------------------ SKU


def test_sku_kl_term_ignores_padding(tiny_model, toy_data):
    ref = Reference.from_model(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = toy_data.retain[:3]
    objective = HarmfulKnowledge(w_bad=0.0, w_rand=0.0, w_norm=1.0)
    forget = collate(toy_data.forget[:3], toy_data.pad_id)

    def pdiv(retain):
        out = objective.loss(tiny_model, UnlearnBatch(forget, retain), ref)
        assert out.total.item() == pytest.approx(-out.parts["pdiv_kl"].item(), abs=1e-7)  # minimised: −KL
        return out.parts["pdiv_kl"].item()

    padded = collate(rows, toy_data.pad_id)
    extra = torch.zeros((3, 5), dtype=torch.long)  # five more pad columns
    wider = TokenBatch(torch.cat([padded.input_ids, extra + toy_data.pad_id], 1),
                       torch.cat([padded.attention_mask, extra], 1),
                       torch.cat([padded.labels, extra + IGNORE_INDEX], 1))
    singles = [(pdiv(collate([r], toy_data.pad_id)), len(r.input_ids)) for r in rows]
    expected = sum(v * n for v, n in singles) / sum(n for _, n in singles)  # mean over real positions
    assert len({len(r.input_ids) for r in rows}) > 1 and expected > 0  # the batch really is padded
    assert pdiv(padded) == pytest.approx(expected, rel=1e-4)
    assert pdiv(wider) == pytest.approx(expected, rel=1e-4)


def test_sku_random_answer_examples_supervise_exactly_the_random_answers(toy_data):
    prompts = collate(toy_data.forget[:3], toy_data.pad_id)
    answers = [(30, 31, 2), (40, 2)]
    batch = random_answer_batch(prompts, answers, toy_data.pad_id)
    assert batch.input_ids.shape[0] == 6
    for row in range(6):
        source, answer = toy_data.forget[row // 2], answers[row % 2]
        prompt = source.input_ids[: source.prompt_length]
        n = int(batch.attention_mask[row].sum())
        assert n == len(prompt) + len(answer)
        assert tuple(batch.input_ids[row, :n].tolist()) == prompt + answer
        labels = batch.labels[row].tolist()
        assert [t for t in labels if t != IGNORE_INDEX] == list(answer)  # nothing of the question
        assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert labels[n:] == [IGNORE_INDEX] * (len(labels) - n)  # padding


def test_sku_answer_pool_is_the_forget_answers(toy_data):
    objective = HarmfulKnowledge()
    objective.setup(toy_data)
    assert objective._pool == [tuple(t for t in e.labels if t != IGNORE_INDEX) for e in toy_data.forget]
    assert all(len(a) >= 2 and a[-1] == 2 for a in objective._pool)  # answer tokens + EOS


def test_sku_preservation_divergence_raises_kl_on_retain(fitted_model, toy_data, train_tiny):
    retain = collate(toy_data.retain, toy_data.pad_id)

    def retain_kl(model) -> float:
        with torch.no_grad():
            return kl_to_reference(logits_of(model, retain), logits_of(fitted_model, retain),
                                   retain.attention_mask).item()

    # descent alone moves θ off θ0 (where the KL gradient is 0); the divergence term then pushes away
    without = train_tiny(HarmfulKnowledge(w_bad=1.0, w_rand=0.0, w_norm=0.0), steps=6, model=fitted_model)
    with_div = train_tiny(HarmfulKnowledge(w_bad=1.0, w_rand=0.0, w_norm=1.0), steps=6, model=fitted_model)
    assert retain_kl(with_div.model) > 2 * retain_kl(without.model) > 0
    logged = [h["pdiv_kl"] for h in with_div.history]
    assert logged[0] == pytest.approx(0.0, abs=1e-6) and logged[-1] > logged[1]


# ------------------------------------------------------------------------ contract for every edit


@pytest.mark.parametrize("name", EDITS)
def test_edit_raises_forget_nll_deterministically(name, fitted_model, toy_data):
    forget_before = set_nll(fitted_model, toy_data.forget, toy_data.pad_id)
    cfg = settings(steps=10, lr=1e-3, seed=3)
    first = METHODS.build(name).apply(copy.deepcopy(fitted_model), toy_data, cfg)
    second = METHODS.build(name).apply(copy.deepcopy(fitted_model), toy_data, cfg)

    assert first.steps == 10 and first.stopped is None and len(first.losses) == 10
    assert all(math.isfinite(v) for v in first.losses)
    assert first.trainable_params == first.total_params > 0
    assert first.losses == second.losses
    a, b = weights(first.model), weights(second.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not first.model.training
    assert set_nll(first.model, toy_data.forget, toy_data.pad_id) > forget_before + 0.05


@pytest.mark.parametrize("name", EDITS)
def test_edit_on_lora_returns_a_plain_model(name, tiny_model, toy_data):
    start = weights(tiny_model)
    result = METHODS.build(name).apply(lora_copy(tiny_model), toy_data, settings(steps=2))
    assert not is_peft_model(result.model)
    edited = weights(result.model)
    assert edited.keys() == start.keys()
    changed = {n for n in start if not torch.equal(edited[n], start[n])}
    assert changed and all("proj" in n for n in changed)


@pytest.mark.parametrize("name", EDITS)
def test_edit_golden_ten_step_curve(name, tiny_model, toy_data, golden):
    result = METHODS.build(name).apply(tiny_model, toy_data, settings(steps=10, lr=1e-3))
    golden.check(f"{name}_tiny_10", result.losses, atol=1e-4)


@pytest.mark.parametrize("name, field, value", [
    ("task_vector", "alpha", float("nan")), ("task_vector", "finetune_lr", 0.0),
    ("task_vector", "finetune_epochs", -1.0), ("sku", "w_norm", -1.0), ("sku", "n_random_answers", -2),
    ("sku", "alpha", float("inf")), ("sku", "stage1_steps", 0),
])
def test_bad_field_value_is_a_user_error_naming_the_field(name, field, value):
    with pytest.raises(UnlearnError, match=f"field '{field}'"):
        METHODS.build(name, **{field: value})


def test_finetune_overrides_replace_the_recipe_settings(tiny_model, toy_data):
    result = TaskVector(finetune_epochs=1.0, finetune_lr=1e-3).apply(copy.deepcopy(tiny_model), toy_data,
                                                                    settings(steps=7))
    assert result.steps == 2  # 8 forget rows / batch 4: the epoch override wins over the recipe's steps
    assert result.history[0]["lr"] == pytest.approx(1e-3)
    sku = METHODS.build("sku", stage1_steps=3, stage1_lr=2e-3).apply(tiny_model, toy_data, settings(steps=7))
    assert sku.steps == 3 and sku.history[0]["lr"] == pytest.approx(2e-3)
