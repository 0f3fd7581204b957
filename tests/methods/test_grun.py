"""GRUN: every base loss on the tiny model, its frozen-model reference, and the whole loop on the
small world (a saved GRUN model reloads in `unlearn eval` with its edit active; sequential requests)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from unlearnkit.data.batch import collate
from unlearnkit.model.edits import edit_positions, edit_stack, edits_disabled
from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import prompt_end_positions
from unlearnkit.losses import nll, sequence_logprob
from unlearnkit.methods.grun import GRUN
from unlearnkit.train.reference import Reference
from unlearnkit.registry import METHODS


def scored_nll(model, examples, pad_id) -> float:
    batch = collate(examples, pad_id)
    with torch.no_grad(), edit_positions(model, prompt_end_positions(batch.labels)):
        return nll(model, batch).item()


@pytest.mark.parametrize("base", ["gd", "npo", "idk", "rmu"])
def test_every_base_unlearns_and_the_gate_leans_toward_forget_rows(base, fitted_model, toy_data, train_tiny):
    # rmu steers block 1's output, which only an edit at block 0 reaches (the toy model has 2 blocks)
    method = GRUN(base=base, steering_coeff=20.0, layers=[0, 1] if base == "rmu" else [0.65, 0.8, 1.0])
    forget_before = scored_nll(fitted_model, toy_data.forget, toy_data.pad_id)
    idk_before = scored_nll(fitted_model, toy_data.extra["idk"], toy_data.pad_id)
    run = train_tiny(method, steps=20, model=fitted_model)
    assert run.stopped is None and all(math.isfinite(v) for v in run.losses)
    if base == "idk":
        assert scored_nll(run.model, toy_data.extra["idk"], toy_data.pad_id) < idk_before
    else:
        assert scored_nll(run.model, toy_data.forget, toy_data.pad_id) > forget_before
    last = run.history[-1]
    assert last["gate_forget"] > last["gate_retain"]
    assert all(name.startswith("unlearn_edits.") for name in run.trained_names)
    assert run.trainable_params < run.total_params / 25  # 2-4 % of a 31k-parameter toy; < 1 % on the world


def test_npo_reference_is_the_same_model_with_edits_off(fitted_model, toy_batch):
    method = GRUN(base="npo")
    method.prepare(fitted_model)
    ref = Reference.from_model(fitted_model)
    assert ref.shares_weights  # no copy of the weights
    with edits_disabled(fitted_model), torch.no_grad():
        expected = sequence_logprob(fitted_model, toy_batch.forget)
    assert torch.allclose(ref.sequence_logprob(toy_batch.forget), expected, atol=1e-6)


def test_npo_forget_term_at_start_with_the_gate_shut_is_c_npo_two_over_beta_log2(fitted_model, toy_batch):
    method = GRUN(base="npo", npo_coeff=100.0, beta=0.1)
    method.prepare(fitted_model)
    with torch.no_grad():
        for module in method._edit.per_layer.values():
            module.gate.weight.zero_()
            module.gate.bias.fill_(-1e4)  # g = 0: the edited model is the frozen model
    out = method.loss(fitted_model, toy_batch, Reference.from_model(fitted_model))
    assert out.parts["forget"].item() == pytest.approx(100 * 2 / 0.1 * math.log(2), rel=1e-5)
    assert out.parts["gate_forget"].item() == 0.0


def test_bad_fields_and_lora_are_user_errors(tiny_model):
    with pytest.raises(UnlearnError, match="unknown base 'ppo'"):
        METHODS.build("grun", base="ppo")
    with pytest.raises(UnlearnError, match="does not exist"):
        GRUN(layers=[9]).prepare(tiny_model)
    from unlearnkit.model import LoraSpec, wrap_lora

    with pytest.raises(UnlearnError, match="remove model.lora"):
        GRUN().prepare(wrap_lora(tiny_model, LoraSpec(r=2)))


# ------------------------------------------------------------------------ the loop on the small world

SMALL = ["world.size=small", "eval.max_new_tokens=40", "eval.batch_size=64"]


@pytest.fixture(scope="module")
def grun_run(tmp_path_factory, isolated_env):
    from unlearnkit.pipeline import run
    from unlearnkit.recipe import load_recipe

    out = tmp_path_factory.mktemp("grun") / "run"
    report = run(load_recipe("default", [*SMALL, "method.name=grun", "train.steps=12"]), out, progress=False,
                 log=lambda message: None)
    return out, report


def test_grun_run_trains_under_one_percent_and_saves_its_edit_apart(grun_run):
    out, report = grun_run
    assert 0 < report["trainable_fraction"] < 0.01
    assert report["after"]["forget_prob"] < report["before"]["forget_prob"]
    assert (out / "model" / "edits.safetensors").is_file() and (out / "model" / "edits.json").is_file()
    from safetensors import safe_open

    with safe_open(str(out / "model" / "model.safetensors"), "pt") as weights:
        assert not any("unlearn_edits" in key for key in weights.keys())  # the LM's weights stay the LM's


def test_saved_grun_model_reloads_in_unlearn_eval_with_its_edit(grun_run, tmp_path, env):
    from unlearnkit.cli import app
    from unlearnkit.model import load_model

    out, report = grun_run
    assert edit_stack(load_model(str(out / "model"))) is not None
    result = CliRunner().invoke(app, ["eval", "--model", str(out / "model"), "--benchmark", "world", "--world-size",
                                      "small", "--max-new-tokens", "40", "--batch-size", "64",
                                      "--out", str(tmp_path / "eval"), "-q"], env=env)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"]
    for key in ("forget_prob", "forget_rouge", "retain_prob", "model_utility"):  # rouge: generation uses the edit
        assert metrics[key] == pytest.approx(report["after"][key], abs=1e-6), key


def test_sequential_requests_train_one_edit_each(tmp_path, isolated_env):
    from unlearnkit.pipeline import run
    from unlearnkit.recipe import load_recipe

    recipe = load_recipe("world/grun_sequential", [*SMALL, "data.sequential=[forget_1, forget]", "train.steps=4"])
    report = run(recipe, tmp_path / "seq", progress=False, log=lambda message: None)
    assert [stage["request"] for stage in report["stages"]] == ["forget_1", "forget"]
    assert "after" in report["stages"][0] and "after" not in report["stages"][1]
    config = json.loads((tmp_path / "seq" / "model" / "edits.json").read_text())
    assert len(config["edits"]) == 2 and config["combine_scale"] == 0.6
    assert report["trainable_params"] == sum(stage["trainable_params"] for stage in report["stages"])
    assert "1. `forget_1`" in (tmp_path / "seq" / "report.md").read_text()
    with pytest.raises(UnlearnError, match="unknown forget request 'forget_9'"):
        run(load_recipe("default", [*SMALL, "data.sequential=[forget_9]"]), tmp_path / "bad", progress=False,
            log=lambda message: None)
    assert not (tmp_path / "bad").exists()


def test_bf16_model_keeps_the_edit_in_float32(tiny_model, train_tiny):
    run = train_tiny(GRUN(), steps=3, model=tiny_model.to(torch.bfloat16))
    assert all(math.isfinite(v) for v in run.losses)
    assert {p.dtype for p in edit_stack(run.model).parameters()} == {torch.float32}  # pitfall 20
    assert next(run.model.model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        out = run.model.generate(input_ids=torch.tensor([[1, 4, 5]]), max_new_tokens=3, do_sample=False,
                                 pad_token_id=0)
    assert out.shape == (1, 6)
