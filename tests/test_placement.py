"""Every phase runs where `model.device` says: each model a run loads is asked for that device, every
scoring and generation pass starts on the device its model sits on, and a GPU that is not there is refused
before anything runs. (On this CPU the device is the CPU; the spy makes a forgotten `device=` visible.)"""

from __future__ import annotations

import pytest
import torch

import unlearnkit.benchmarks.passes as passes
import unlearnkit.model as model_package

pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture
def spies(monkeypatch):
    loads, passes_on = [], []
    real_load, real_device = model_package.load_model, passes.model_device

    def load_model(name, **kwargs):
        loads.append((name, kwargs.get("device")))
        return real_load(name, **kwargs)

    def model_device(model):
        passes_on.append(real_device(model))
        return passes_on[-1]

    monkeypatch.setattr(model_package, "load_model", load_model)
    monkeypatch.setattr(passes, "model_device", model_device)
    return loads, passes_on


@pytest.mark.parametrize("command", [
    ("run", "world.size=small", "train.steps=1", "eval.before=true", "attacks.relearn.enabled=true",
     "attacks.relearn.steps=1", "model.device=cpu"),
    ("eval", "--recipe", "default", "world.size=small", "model.name=world:retain", "eval.max_new_tokens=4",
     "model.device=cpu"),
])
def test_every_model_is_loaded_on_the_recipes_device_and_scored_there(cli, tmp_path, spies, command):
    loads, passes_on = spies
    result = cli(*command, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, (result.output, result.exception)
    assert loads and all(device == "cpu" for _, device in loads), loads  # start model, retain model, references
    assert passes_on and set(passes_on) == {torch.device("cpu")}


def test_a_gpu_that_is_not_there_is_refused_before_anything_runs(cli, tmp_path, spies):
    if torch.cuda.device_count() > 3:
        pytest.skip("this machine has a fourth GPU")
    result = cli("run", "world.size=small", "model.device=cuda:3", "--out", tmp_path / "out", "-q")
    assert result.exit_code == 2 and "model.device=cuda:3" in result.stderr and "use model.device=auto" in result.stderr
    assert spies == ([], []) and not (tmp_path / "out").exists()
