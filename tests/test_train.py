"""The trainer: gradient accumulation, divergence guard, exact resume, checkpoint files, the
JSONL log, the LR schedule, and the reference cache (one precompute, then the copy is dropped)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unlearnkit.data.batch import collate
from unlearnkit.data.pairing import UnlearnData, epoch_batches
from unlearnkit.errors import UnlearnError
from unlearnkit.losses import nll, sequence_logprob
from unlearnkit.methods.base import LossOutput, UnlearningMethod
from unlearnkit.methods.finetune import Finetune
from unlearnkit.model import LoraSpec, wrap_lora
from unlearnkit.train.reference import Reference
from unlearnkit.registry import METHODS

ADAM_BETA1 = 0.9  # TrainConfig default: after one step AdamW's exp_avg is (1 − β1)·grad


def first_step_gradients(out_dir: Path) -> dict[str, torch.Tensor]:
    """The gradient of optimizer step 1, read back from AdamW's first moment in the step-1 checkpoint."""
    state = load_file(str(out_dir / "checkpoints" / "step-1" / "trainer_state.safetensors"))
    return {k: v / (1 - ADAM_BETA1) for k, v in state.items() if k.endswith(".exp_avg")}


def autograd_gradients(model, loss_fn) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model)
    model.zero_grad()
    loss_fn(model).backward()
    return {f"optim.{n}.exp_avg": p.grad.detach().clone() for n, p in model.named_parameters()}


def assert_same_tensors(a: dict, b: dict, atol: float, rtol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=rtol, msg=lambda m, k=key: f"{k}: {m}")


# ---------------------------------------------------------------- gradient accumulation


def test_accumulation_equals_one_big_batch_when_micro_batches_hold_equal_token_counts(
        tiny_model, train_tiny, make_example, tmp_path):
    # Every example has 4 supervised tokens (3 answer + EOS) but prompts of different lengths, so
    # the micro-batches are padded differently. The stream takes the same 8 rows per step either
    # way (one epoch). Each micro-batch loss is a token mean, so accumulation averages two means:
    # equal to the big batch's token mean exactly when the micro-batches hold equal token counts.
    forget = [make_example(list(range(3, 3 + k % 3 + 1)), [20 + k, 30 + k, 40 + k]) for k in range(8)]
    data = UnlearnData(forget=forget, pad_id=0)
    common = dict(max_grad_norm=None, save_every=1)
    train_tiny(Finetune(), 2, data=data, batch_size=4, grad_accum=2, out_dir=tmp_path / "accum", **common)
    train_tiny(Finetune(), 2, data=data, batch_size=8, grad_accum=1, out_dir=tmp_path / "big", **common)

    accumulated = first_step_gradients(tmp_path / "accum")
    big = first_step_gradients(tmp_path / "big")
    direct = autograd_gradients(tiny_model, lambda m: nll(m, collate(forget, 0)))
    assert_same_tensors(accumulated, big, atol=1e-7, rtol=1e-4)
    assert_same_tensors(big, direct, atol=1e-7, rtol=1e-4)

    # And so is the first update, lr·g/(|g| + eps) for AdamW's first step. Where |g| is near eps
    # that ratio amplifies rounding, so compare only coordinates with |g| well above it.
    after = [load_file(str(tmp_path / d / "checkpoints" / "step-1" / "trainer_state.safetensors"))
             for d in ("accum", "big")]
    compared = 0
    for name, start in tiny_model.named_parameters():
        clear = big[f"optim.{name}.exp_avg"].abs() > 1e-5
        updates = [state[f"param.{name}"] - start.detach() for state in after]
        torch.testing.assert_close(updates[0][clear], updates[1][clear], atol=1e-7, rtol=1e-3)
        compared += int(clear.sum())
    assert compared > 0.8 * sum(p.numel() for p in tiny_model.parameters())  # most of the model


def test_accumulation_averages_micro_batch_means_when_token_counts_differ(
        tiny_model, toy_data, train_tiny, tmp_path):
    # With varied answer lengths the accumulated gradient is the mean of the micro-batch token
    # means (as in the HF Trainer without num_items_in_batch), not the token mean over all rows.
    train_tiny(Finetune(), 2, batch_size=4, grad_accum=2, max_grad_norm=None, save_every=1, out_dir=tmp_path)
    micro = [b.forget for b in epoch_batches(toy_data, 4, epoch=0, seed=0, use_retain=False)]
    assert len(micro) == 2
    counts = [int((m.labels[:, 1:] != -100).sum()) for m in micro]
    assert counts[0] != counts[1]

    got = first_step_gradients(tmp_path)
    mean_of_means = autograd_gradients(tiny_model, lambda m: (nll(m, micro[0]) + nll(m, micro[1])) / 2)
    assert_same_tensors(got, mean_of_means, atol=1e-7, rtol=1e-4)
    token_mean = autograd_gradients(tiny_model, lambda m: nll(m, collate(toy_data.forget, 0)))
    head = "optim.lm_head.weight.exp_avg"
    assert not torch.allclose(got[head], token_mean[head], atol=1e-6, rtol=1e-3)


# ---------------------------------------------------------------- freezing


@dataclass
class HeadOnly(UnlearningMethod):
    """Fine-tune only the output layer (a method whose `prepare` picks a subset)."""

    def prepare(self, model):
        return [model.lm_head.weight]

    def loss(self, model, batch, ref):
        value = nll(model, batch.forget)
        return LossOutput(value, {"nll": value})


def test_only_the_parameters_prepare_returned_change(tiny_model, train_tiny):
    run = train_tiny(HeadOnly(), 3, weight_decay=0.1)  # decay must not reach frozen weights either
    assert run.trained_names == ["lm_head.weight"]
    assert run.trainable_params == tiny_model.lm_head.weight.numel()
    start = dict(tiny_model.named_parameters())
    for name, p in run.model.named_parameters():
        assert torch.equal(p, start[name]) == (name != "lm_head.weight"), name


# ---------------------------------------------------------------- divergence guard


@dataclass
class NanOnCall(UnlearningMethod):
    """NLL on the forget slot, made non-finite on call `bad_call` (`where`: the loss or the gradient)."""

    bad_call: int = 3
    where: str = "loss"
    calls: int = 0

    def loss(self, model, batch, ref):
        self.calls += 1
        value = nll(model, batch.forget)
        if self.calls == self.bad_call:
            if self.where == "loss":
                value = value * float("nan")
            else:  # finite loss, NaN gradient: d sqrt(x)/dx = inf at x = 0, times d x/dθ = 0
                weight = model.lm_head.weight
                value = value + 0.0 * torch.sqrt(((weight - weight.detach()) ** 2).sum())
        return LossOutput(value, {"nll": value})


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_divergence_stops_before_the_bad_step_and_keeps_step_two_weights(where, train_tiny):
    diverged = train_tiny(NanOnCall(bad_call=3, where=where), steps=6)
    clean = train_tiny(NanOnCall(bad_call=-1), steps=2)

    assert diverged.stopped is not None and "step 3" in diverged.stopped and where in diverged.stopped
    assert diverged.steps == 2 and len(diverged.history) == 2
    assert diverged.losses == clean.losses
    for (name, p), (_, q) in zip(diverged.model.named_parameters(), clean.model.named_parameters()):
        assert torch.isfinite(p).all(), name
        assert torch.equal(p, q), f"{name} moved at the non-finite step"


# ---------------------------------------------------------------- checkpoints and resume


RESUME_CFG = dict(grad_accum=2, warmup_steps=2, scheduler="linear", seed=3)


def named_params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def test_resume_from_a_checkpoint_matches_the_uninterrupted_run(tiny_model, train_tiny, tmp_path):
    full = train_tiny(METHODS.build("npo"), 6, save_every=3, out_dir=tmp_path / "full", **RESUME_CFG)
    ckpt = tmp_path / "full" / "checkpoints" / "step-3"
    assert ckpt.is_dir() and (tmp_path / "full" / "checkpoints" / "step-6").is_dir()  # every 3 steps and the last

    resumed = train_tiny(METHODS.build("npo"), 6, model=tiny_model, resume_from=str(ckpt),
                         out_dir=tmp_path / "resumed", **RESUME_CFG)

    assert resumed.steps == 6 and resumed.stopped is None
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in full.history], abs=1e-12)
    assert_same_tensors(named_params(resumed.model), named_params(full.model), atol=1e-6)
    assert not torch.equal(named_params(full.model)["lm_head.weight"], tiny_model.lm_head.weight)


def test_resume_with_lora_and_dropout_matches_the_uninterrupted_run(tiny_model, train_tiny, tmp_path):
    # Dropout draws from the torch RNG: the checkpoint must carry its state for an exact resume.
    lora = wrap_lora(tiny_model, LoraSpec(r=4, dropout=0.1))
    full = train_tiny(METHODS.build("grad_diff"), 4, model=lora, save_every=2, out_dir=tmp_path / "full",
                      **RESUME_CFG)
    resumed = train_tiny(METHODS.build("grad_diff"), 4, model=lora, out_dir=tmp_path / "resumed",
                         resume_from=str(tmp_path / "full" / "checkpoints" / "step-2"), **RESUME_CFG)
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)
    assert_same_tensors(named_params(resumed.model), named_params(full.model), atol=1e-6)


def test_resume_from_a_directory_that_is_not_a_checkpoint_is_a_user_error(train_tiny, tmp_path):
    with pytest.raises(UnlearnError, match="not a checkpoint written by unlearnkit"):
        train_tiny(Finetune(), 2, resume_from=str(tmp_path))


PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_checkpoint_holds_safetensors_and_json_only(lora, tiny_model, train_tiny, tmp_path):
    model = wrap_lora(tiny_model, LoraSpec(r=4)) if lora else tiny_model
    train_tiny(METHODS.build("grad_ascent"), 2, model=model, save_every=1, out_dir=tmp_path)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-1", "step-2"]  # nothing temporary or half-written
    files = {p.name for p in (checkpoints / "step-1").iterdir()}
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    assert {weights, "trainer_state.safetensors", "trainer_state.json"} <= files
    assert not {f for f in files if Path(f).suffix in PICKLE_SUFFIXES}, files
    state = load_file(str(checkpoints / "step-1" / "trainer_state.safetensors"))
    params = [k for k in state if k.startswith("param.")]
    assert params and (not lora or all("lora_" in k for k in params))  # LoRA: adapter weights only
    assert any(k.endswith(".exp_avg_sq") for k in state)
    meta = json.loads((checkpoints / "step-1" / "trainer_state.json").read_text())
    assert meta["step"] == 1 and len(meta["history"]) == 1


# ---------------------------------------------------------------- log and schedule


def test_train_log_has_one_line_per_step_with_every_loss_part(train_tiny, tmp_path):
    run = train_tiny(METHODS.build("npo"), 4, out_dir=tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    for record in lines:
        assert {"loss", "forget", "retain", "log_ratio", "lr", "grad_norm"} <= record.keys()
        assert all(math.isfinite(v) for v in record.values())
    assert lines == run.history


@pytest.mark.parametrize("scheduler,hf_name", [("constant", "constant_with_warmup"), ("linear", "linear"),
                                               ("cosine", "cosine")])
def test_logged_learning_rates_follow_transformers_get_scheduler(scheduler, hf_name, train_tiny):
    from transformers import get_scheduler

    steps, warmup, lr = 6, 2, 1e-3
    run = train_tiny(Finetune(), steps, lr=lr, warmup_steps=warmup, scheduler=scheduler, batch_size=2)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    reference = get_scheduler(hf_name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    expected = []
    for _ in range(steps):
        optimizer.step()
        reference.step()
        expected.append(reference.get_last_lr()[0])  # like the trainer: the LR after this step's update
    assert [h["lr"] for h in run.history] == pytest.approx(expected, abs=1e-12)
    assert max(expected) == pytest.approx(lr)


def test_unknown_scheduler_is_a_user_error(train_tiny):
    with pytest.raises(UnlearnError, match="unknown train.scheduler 'cosin'.*cosine"):
        train_tiny(Finetune(), 1, scheduler="cosin")


# ---------------------------------------------------------------- the reference


def precompute_batches(data: UnlearnData, ref_batch_size: int = 32) -> int:
    return sum(math.ceil(len(view) / ref_batch_size) for view in [data.forget, *data.extra.values()])


@pytest.mark.parametrize("name,lookups_per_step", [("npo", 1), ("dpo", 2)])
def test_logprob_reference_is_computed_once_by_the_model_itself_without_a_copy(name, lookups_per_step, toy_data,
                                                                               train_tiny, references, monkeypatch):
    def no_copy(*args, **kwargs):
        raise AssertionError("the trainer built a reference copy for a method that needs only cached log-probs")

    monkeypatch.setattr(Reference, "from_model", classmethod(no_copy))
    run = train_tiny(METHODS.build(name), 4)
    (ref,) = references
    assert ref.shares_weights  # the starting model itself, before the first step
    assert ref.misses == precompute_batches(toy_data)  # only the precompute ran a forward
    assert ref.hits == 4 * lookups_per_step
    with pytest.raises(RuntimeError, match="released"):
        ref.model  # only the cache is left: no reference forward could have run after the precompute
    assert run.stopped is None


@pytest.mark.parametrize("name", ["grad_ascent", "grad_diff", "simnpo", "idk"])
def test_methods_without_a_reference_get_none(name, train_tiny, references):
    assert METHODS.build(name).needs_reference() is None
    assert train_tiny(METHODS.build(name), 1).stopped is None
    assert references == []  # nothing was built, not even a cache


def test_kl_retain_keeps_a_frozen_reference_copy(tiny_model, train_tiny, references):
    run = train_tiny(METHODS.build("npo", retain_loss="kl"), 2)
    (ref,) = references
    assert not ref.shares_weights and ref.model is not run.model
    assert all(not p.requires_grad for p in ref.model.parameters())
    # frozen at the start weights, while the trained model moved
    torch.testing.assert_close(ref.model.lm_head.weight, tiny_model.lm_head.weight, atol=0, rtol=0)
    assert not torch.equal(run.model.lm_head.weight, tiny_model.lm_head.weight)


def test_lora_reference_shares_weights_and_runs_with_adapters_off(tiny_model, toy_data, train_tiny,
                                                                 references):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    run = train_tiny(METHODS.build("npo", retain_loss="kl"), 3, model=lora)  # the KL term needs the whole reference
    (ref,) = references
    assert ref.shares_weights and ref.model is run.model  # no second copy of the weights
    assert run.total_params == sum(p.numel() for p in lora.parameters())

    retain = collate(toy_data.retain, toy_data.pad_id)  # never cached: needs a real forward
    with torch.no_grad():
        start = sequence_logprob(tiny_model, retain)
        trained = sequence_logprob(run.model, retain)
    torch.testing.assert_close(ref.sequence_logprob(retain), start, atol=1e-4, rtol=0)
    assert not torch.allclose(trained, start, atol=1e-4)