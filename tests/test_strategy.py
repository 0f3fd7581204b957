"""What `accelerate launch` hands the trainer: the strategy read from its environment variables, the refusals
(DeepSpeed, FSDP1, model edits and GRUN under FSDP2), mixed precision from the config when the recipe leaves it,
and the options that change memory but not what is learned (gradient checkpointing, experiment tracking)."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.errors import UnlearnError
from unlearnkit.registry import METHODS
from unlearnkit.train.strategy import Strategy, check_supported, make_accelerator, requested

FSDP2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}


@pytest.fixture
def launch_env(monkeypatch):
    """Set what `accelerate launch` would export (and nothing left over from the caller)."""
    import os

    for key in [k for k in os.environ if k.startswith(("ACCELERATE_", "FSDP_"))] + ["WORLD_SIZE", "RANK"]:
        monkeypatch.delenv(key, raising=False)

    def apply(**values):
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    return apply


def test_the_strategy_comes_from_the_launch(launch_env):
    assert requested() == Strategy("single")
    launch_env(WORLD_SIZE="2")
    assert requested().name == "ddp"
    launch_env(**FSDP2)
    assert requested().name == "fsdp2" and requested().shards_parameters


def test_unsupported_engines_are_refused_naming_the_config_that_works(launch_env):
    launch_env(WORLD_SIZE="2", ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="3")
    assert requested() == Strategy("deepspeed", 3) and requested().shards_parameters
    launch_env(ACCELERATE_DEEPSPEED_ZERO_STAGE="1")
    with pytest.raises(UnlearnError, match=r"ZeRO stage 1 is not supported.*deepspeed-zero2.yaml"):
        requested()
    launch_env(ACCELERATE_USE_DEEPSPEED="false", ACCELERATE_USE_FSDP="true", FSDP_VERSION="1")
    with pytest.raises(UnlearnError, match=r"FSDP version 1 .*fsdp_version: 2"):
        requested()


@pytest.mark.parametrize("edit", ["model_edit", "representation_edit"])
@pytest.mark.parametrize("engine", [Strategy("fsdp2", processes=2), Strategy("deepspeed", 2, processes=2)])
def test_what_cannot_run_sharded_names_the_strategies_that_can(edit, engine):
    check_supported(Strategy("ddp", processes=2), "sku", **{edit: True})  # fine under DDP
    with pytest.raises(UnlearnError, match=r"one process or under DDP \(configs/accelerate/ddp.yaml\)"):
        check_supported(engine, "sku", **{edit: True})


def test_a_whole_reference_is_refused_under_zero3_only():
    for fine in (Strategy("fsdp2", processes=2), Strategy("deepspeed", 2, processes=2)):
        check_supported(fine, "rmu", full_reference=True)
    with pytest.raises(UnlearnError, match=r"whole frozen reference.*ZeRO-3.*fsdp2.yaml.*LoRA"):
        check_supported(Strategy("deepspeed", 3, processes=2), "rmu", full_reference=True)


def test_cpu_offload_without_a_gpu_is_refused(launch_env):
    launch_env(**FSDP2, FSDP_OFFLOAD_PARAMS="true")
    with pytest.raises(UnlearnError, match=r"CPU offload .* without a GPU use configs/accelerate/fsdp2.yaml"):
        make_accelerator("cpu")


def test_an_unsupported_launch_is_one_line_from_the_cli(cli, launch_env, tmp_path):
    launch_env(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="1")
    result = cli("run", "default", "--no-eval", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "ZeRO stage 1 is not supported" in result.stderr, (result.stderr, result.exception)
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_mixed_precision_comes_from_the_config_when_the_recipe_leaves_it(launch_env):
    make_accelerator("cpu", "no")  # an earlier run in this process, without mixed precision
    launch_env(ACCELERATE_MIXED_PRECISION="bf16")
    accelerator, strategy = make_accelerator("cpu", "no")
    assert accelerator.mixed_precision == "bf16" and strategy.name == "single"
    launch_env(ACCELERATE_MIXED_PRECISION="no")
    accelerator, _ = make_accelerator("cpu", "fp16")  # the recipe's choice wins
    assert accelerator.mixed_precision == "fp16"


def test_gradient_checkpointing_changes_memory_not_what_is_learned(train_tiny):
    plain = train_tiny(METHODS.build("grad_diff"), 3)
    checkpointed = train_tiny(METHODS.build("grad_diff"), 3, gradient_checkpointing=True)
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-6, abs=1e-7)
    for a, b in zip(plain.model.parameters(), checkpointed.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_training_logs_every_loss_part_to_tensorboard(train_tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_tiny(METHODS.build("grad_diff"), 3, out_dir=tmp_path, report_to=["tensorboard"])
    run.tracking.log_metrics({"forget_prob": 0.25, "nested": {"x": 1.0}, "missing": None}, step=3)
    run.tracking.finish()
    runs = {str(p.parent): EventAccumulator(str(p.parent)).Reload() for p in (tmp_path / "tracking").rglob("events.*")}
    (events,) = [run for run in runs.values() if "loss" in run.Tags()["scalars"]]  # (hparams have their own folder)
    scalars = events.Tags()["scalars"]
    assert {"loss", "forget", "retain", "lr", "grad_norm", "eval/forget_prob", "eval/nested/x"} <= set(scalars)
    losses = [e.value for e in events.Scalars("loss")]
    assert losses == pytest.approx(run.losses, rel=1e-6)


def test_the_process_group_is_destroyed_at_exit_once(monkeypatch):
    """A process that leaves gloo's group alive can abort during interpreter shutdown (SIGABRT after its work
    is done): the first set-up registers one exit handler that destroys the group."""
    import torch.distributed as dist

    from unlearnkit.train import strategy as module

    registered = []
    monkeypatch.setattr(module, "_CLOSING", False)
    monkeypatch.setattr(module.atexit, "register", registered.append)
    module.close_group_at_exit()
    module.close_group_at_exit()
    assert registered == [module._close_group]
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        registered[0]()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    registered[0]()  # nothing to close: no error
