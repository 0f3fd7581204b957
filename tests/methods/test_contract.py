"""The contract every registered method must keep on the tiny model.

For each name in METHODS: the loss is finite; after 10 steps the forget answers are less likely
(for `idk`, which *suppresses* rather than removes, the IDK answers become more likely instead);
only the parameters `prepare` returned change; two runs with one seed are identical; the method
also trains as LoRA with only adapter weights moving; bad fields are user errors that name the
field (and suggest the near miss).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing

import pytest
import torch

from unlearnkit.data.batch import collate
from unlearnkit.model.edits import edit_positions
from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import prompt_end_positions
from unlearnkit.losses import nll
from unlearnkit.model import LoraSpec, wrap_lora
from unlearnkit.train.reference import Reference
from unlearnkit.methods.base import ModelEdit
from unlearnkit.registry import METHODS

ALL_NAMES = METHODS.names()
# multi-phase model edits (task vectors, SKU) have their own contract: tests/methods/test_model_edits.py
NAMES = [n for n in ALL_NAMES if not issubclass(METHODS.get(n), ModelEdit)]


def test_the_registry_holds_the_core_methods():
    assert {"grad_ascent", "grad_diff", "npo", "simnpo", "dpo", "idk"} <= set(NAMES)
    assert "finetune" not in NAMES  # a helper objective, not an unlearning method


def full_set_nll(model, examples, pad_id) -> float:
    batch = collate(examples, pad_id)
    with torch.no_grad(), edit_positions(model, prompt_end_positions(batch.labels)):  # GRUN edits the prompt's end
        return nll(model, batch).item()


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_at_start(name, tiny_model, toy_data, toy_batch):
    method = METHODS.build(name)
    method.prepare(tiny_model)  # methods that add modules (GRUN's edit) create them here
    method.setup(dataclasses.replace(toy_data, extra=dict(toy_data.extra)))  # as the trainer: after prepare
    ref = Reference.from_model(tiny_model) if method.needs_reference() else None
    out = method.loss(tiny_model, toy_batch, ref)
    assert out.total.dim() == 0 and torch.isfinite(out.total)
    assert out.parts and all(torch.isfinite(v) for v in out.parts.values())


@pytest.mark.parametrize("name", NAMES)
def test_ten_steps_unlearn_and_move_only_prepared_params(name, fitted_model, toy_data, train_tiny):
    # Starts from a model that has learnt the forget answers: on a random model the forget NLL is
    # already at chance (log 64) and saturating objectives such as SimNPO have nothing to push.
    start = {n: p.detach().clone() for n, p in fitted_model.named_parameters()}
    forget_before = full_set_nll(fitted_model, toy_data.forget, toy_data.pad_id)
    idk_before = full_set_nll(fitted_model, toy_data.extra["idk"], toy_data.pad_id)

    run = train_tiny(METHODS.build(name), steps=10, model=fitted_model)

    assert run.steps == 10 and run.stopped is None
    assert all(math.isfinite(v) for v in run.losses)
    if name == "idk":
        # IDK is a suppression method: it teaches "I don't know" and need not raise the forget NLL.
        assert full_set_nll(run.model, toy_data.extra["idk"], toy_data.pad_id) < idk_before
    else:
        assert full_set_nll(run.model, toy_data.forget, toy_data.pad_id) > forget_before
    # parameters that `prepare` created (GRUN's edit) have no start value; they must be trained ones
    changed = [n for n, p in run.model.named_parameters() if n not in start or not torch.equal(p, start[n])]
    assert changed, f"{name} changed no parameter in 10 steps"
    assert set(changed) <= set(run.trained_names), f"{name} changed frozen parameters"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_runs(name, train_tiny):
    first = train_tiny(METHODS.build(name), steps=2, seed=7)
    second = train_tiny(METHODS.build(name), steps=2, seed=7)
    assert first.losses == second.losses
    for (n, a), (_, b) in zip(first.model.named_parameters(), second.model.named_parameters()):
        assert torch.equal(a, b), f"{name}: {n} differs between two runs with one seed"


@pytest.mark.parametrize("name", [n for n in NAMES if getattr(METHODS.get(n), "supports_lora", True)])
def test_trains_as_lora_with_only_adapter_weights_changing(name, tiny_model, train_tiny):
    lora = wrap_lora(tiny_model, LoraSpec(r=4))
    start = {n: p.detach().clone() for n, p in lora.named_parameters()}

    run = train_tiny(METHODS.build(name), steps=2, model=lora)  # step 1 moves lora_B only (B starts at 0)

    assert all(math.isfinite(v) for v in run.losses)
    assert run.trained_names and all("lora_" in n for n in run.trained_names)
    assert run.trainable_params < run.total_params / 5
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, start[n])}
    assert changed and all("lora_" in n for n in changed), sorted(changed - set(run.trained_names))[:5]
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_unknown_field_is_a_user_error(name):
    with pytest.raises(UnlearnError, match=f"unknown field 'bogus' for method '{name}'"):
        METHODS.build(name, bogus=1)


def test_near_miss_field_suggests_the_right_name():
    with pytest.raises(UnlearnError, match="did you mean 'beta'\\?") as err:
        METHODS.build("npo", betta=0.05)
    assert "betta" in str(err.value) and "retain_weight" in str(err.value)  # lists the valid fields


def test_near_miss_method_name_suggests_the_right_name():
    with pytest.raises(UnlearnError, match="unknown method 'npoo'; did you mean 'npo'\\?"):
        METHODS.build("npoo")


def float_fields(name: str) -> list[str]:
    hints = typing.get_type_hints(METHODS.get(name))  # Positive, Fraction, ... are Annotated floats
    return [f.name for f in dataclasses.fields(METHODS.get(name)) if hints[f.name] is float]


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if float_fields(n)])
def test_wrong_type_is_a_user_error_naming_the_field(name):
    field = "beta" if "beta" in float_fields(name) else float_fields(name)[0]
    with pytest.raises(UnlearnError, match=f"field '{field}'.*'abc'"):
        METHODS.build(name, **{field: "abc"})


def test_values_are_coerced_to_the_field_type():
    method = METHODS.build("npo", beta="0.25", retain_weight=2)
    assert method.beta == 0.25 and isinstance(method.retain_weight, float)
    assert copy.deepcopy(method) == method
