"""THE training loop. Every method, the world builder and (later) attacks train through it.

The trainer owns what methods must not: optimizer (AdamW), LR schedule with warmup, gradient
accumulation, mixed precision and device placement (accelerate), seeding, freezing whatever
`method.prepare` did not return, the frozen reference (`Reference`), logging of every loss part,
progress bar, checkpoints (`save_pretrained` + safetensors, resumable), and a divergence guard:
non-finite logits, loss or gradient norm stop training *before* the optimizer step, so the model
keeps the weights of the last complete step (the report says so; the CLI exits with status 4).

Ctrl-C during training is taken at the end of the current step: a checkpoint of that step is saved
in ``out_dir/checkpoints/step-N`` and KeyboardInterrupt is raised, so `unlearn run --resume` can
continue exactly there. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from unlearnkit.data.batch import collate
from unlearnkit.data.pairing import UnlearnData, batch_stream, batches_per_epoch
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.model.edits import has_edits
from unlearnkit.model.hooks import base_causal_lm
from unlearnkit.model.loading import enable_gradient_checkpointing
from unlearnkit.train.checkpoint import consolidate, gather_state, load_trainer_state, meta_skeleton, save_checkpoint
from unlearnkit.train import deepspeed_state
from unlearnkit.train.reference import Reference, shares_weights
from unlearnkit.train.modifiers import ascent_backward, check_modifiers, rectify, salient_groups
from unlearnkit.train.strategy import check_supported, fsdp2_sharder, make_accelerator, reshard


@dataclass
class TrainConfig:
    """Optimisation settings (the recipe's `train:` section)."""

    steps: int | None = None  # optimizer steps; when None, `epochs` decides
    epochs: float = 5.0  # passes over the forget set (used when steps is None)
    lr: float = 1e-5
    batch_size: int = 8  # per device, per micro-batch
    grad_accum: int = 1
    warmup_steps: int = 0
    scheduler: str = "constant"  # constant | linear | cosine (after warmup)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16
    seed: int = 0
    log_every: int = 1
    save_every: int = 0  # checkpoint every N steps (0: only what the caller saves)
    resume_from: str | None = None  # a checkpoint dir written by this trainer
    progress: bool = True
    local: bool = False  # train in this process alone under a multi-process launch (world builds on one rank)
    sam_rho: float = 0.0  # > 0: the forget term's gradient at θ + ρ·g/‖g‖ (`train.modifiers`); 0: off
    gru: bool = False  # remove from the forget gradient its conflict with the retain gradient (`train.modifiers`)
    sure_percentile: float = 0.0  # > 0: train only tensors whose forget-gradient norm is at/above this percentile
    gradient_checkpointing: bool = False  # recompute block activations in the backward (memory for compute)
    report_to: list[str] = field(default_factory=list)  # accelerate trackers: tensorboard, wandb, mlflow, ...
    device: str = "auto"  # auto | cpu | cuda | cuda:N (`model.loading.resolve_device`); the recipe's model.device

    def total_steps(self, n_forget: int, world_size: int = 1) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = batches_per_epoch(n_forget, self.batch_size, world_size) / self.grad_accum
        return max(1, math.ceil(self.epochs * per_epoch))


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    trained_names: list[str] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    stopped: str | None = None  # why training ended early (divergence), else None
    seconds: float = 0.0
    tracking: object | None = None  # the run's experiment trackers (`Tracking`): evaluation metrics go there too

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


def _schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total: int):
    from transformers import get_scheduler

    names = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
    if cfg.scheduler not in names:
        from unlearnkit.errors import UnlearnError

        raise UnlearnError(f"unknown train.scheduler '{cfg.scheduler}'; valid: {', '.join(names)}")
    return get_scheduler(names[cfg.scheduler], optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=total)


def _param_groups(prepared, lr: float) -> list[dict]:
    """`prepare`'s result as optimizer groups: parameters train at `lr`; a dict
    ``{"params": [...], "lr": x}`` is a group with its own learning rate (e.g. GRUN's edit), and
    ``{"params": [...], "lr_scale": k}`` one at k × `lr` (e.g. RMU's down-projections)."""
    plain, groups = [], []
    for item in prepared:
        if isinstance(item, dict):
            group_lr = item.get("lr") or lr * float(item.get("lr_scale", 1.0))
            groups.append({"params": list(item["params"]), "lr": float(group_lr)})
        else:
            plain.append(item)
    return ([{"params": plain, "lr": lr}] if plain else []) + groups


def freeze_except(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    """requires_grad only for `params`; returns their names."""
    keep = {id(p) for p in params}
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in keep)
        if id(p) in keep:
            names.append(name)
    return names


@contextlib.contextmanager
def _logits_watch(model: nn.Module):
    """Track whether every forward's logits were finite (one float32 sum per forward, no sync)."""
    state: dict[str, torch.Tensor | None] = {"finite": None}

    def hook(_module, _args, output):
        logits = getattr(output, "logits", None)
        if isinstance(logits, torch.Tensor):
            finite = torch.isfinite(logits.detach().sum(dtype=torch.float32))
            state["finite"] = finite if state["finite"] is None else state["finite"] & finite

    handle = base_causal_lm(model).register_forward_hook(hook)
    try:
        yield state
    finally:
        handle.remove()


@contextlib.contextmanager
def _stop_after_step_on_interrupt():
    """The first Ctrl-C asks the loop to stop after the current step; the second stops at once."""
    state = {"requested": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(_signum, _frame):
        if state["requested"]:
            raise KeyboardInterrupt
        state["requested"] = True
        print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


_OPEN_TRACKING: list = []


def train(model: nn.Module, method: UnlearningMethod, data: UnlearnData, cfg: TrainConfig, *,
          out_dir: str | Path | None = None, ref_batch_size: int = 32,
          on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train `model` in place with `method` on `data`; returns the unwrapped model and the log.

    Under `accelerate launch` the strategy of its config (`unlearnkit.train.strategy`) decides how the
    model is wrapped and who synchronises gradients; under FSDP2 the returned model is consolidated (full
    weights on every rank) for evaluation and saving."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from unlearnkit.train.tracking import Tracking, accelerator_kwargs

    start = time.perf_counter()
    accelerator, strategy = make_accelerator(cfg.device, cfg.mixed_precision, cfg.local,
                                             **accelerator_kwargs(cfg.report_to, Path(out_dir) if out_dir else None))
    set_seed(cfg.seed)
    model.to(accelerator.device)

    groups = _param_groups(method.prepare(model), cfg.lr)
    if cfg.sure_percentile:  # SURE: only the most forget-salient of those tensors train
        groups = salient_groups(model, groups, data, cfg.sure_percentile)
    params = [p for group in groups for p in group["params"]]
    if not params:
        raise ValueError(f"{type(method).__name__}.prepare returned no parameters to train")
    trained_names = freeze_except(model, params)
    model.to(accelerator.device)  # prepare may have created new modules
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    kind = method.needs_reference()
    name = getattr(method, "registry_name", type(method).__name__)
    check_modifiers(cfg, strategy, method)
    check_supported(strategy, name, representation_edit=has_edits(model), inner_backward=method.runs_inner_backward(),
                    full_reference=kind == "model" and not shares_weights(model))
    data = dataclasses.replace(data, extra=dict(data.extra))  # a method may add views in setup (AltPO): not to the caller's
    method.setup(data)
    reference = None
    if kind == "model":  # after prepare: LoRA adapters / edits exist, so the reference can share weights
        reference = Reference.from_model(model, autocast=accelerator.autocast,
                                         shard=fsdp2_sharder(accelerator) if strategy.name == "fsdp2" else None)
    # sharded (or engine-held) weights are consolidated into this plain copy of the module tree after training
    skeleton = meta_skeleton(model) if strategy.name in ("fsdp2", "deepspeed") else None

    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    total = cfg.total_steps(len(data.forget), strategy.processes)
    scheduler = _schedule(optimizer, cfg, total)
    if strategy.name == "deepspeed":
        deepspeed_state.configure(accelerator, cfg.batch_size, strategy.processes, cfg.max_grad_norm)
    if not cfg.local:  # local: neither wrapped nor synchronised with the other processes
        model, optimizer = accelerator.prepare(model, optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]  # FSDP2 swaps in sharded ones
    if kind == "logprobs":  # the starting model itself, sharded or not, before any step: no copy
        views = [data.forget, *data.extra.values()]
        reference = Reference.cached(accelerator.unwrap_model(model), (
            collate(view[i : i + ref_batch_size], data.pad_id).to(accelerator.device)
            for view in views for i in range(0, len(view), ref_batch_size)), autocast=accelerator.autocast)
        reshard(model)

    result = TrainResult(model=model, trained_names=trained_names,
                         trainable_params=sum(p.numel() for p in (skeleton or model).parameters() if p.requires_grad),
                         total_params=sum(p.numel() for p in (skeleton or accelerator.unwrap_model(model)).parameters()))
    first_step = 0
    if cfg.resume_from:
        first_step, result.history = load_trainer_state(cfg.resume_from, model, optimizer, scheduler, method)
    stream = batch_stream(data, cfg.batch_size, cfg.seed, strategy.rank, strategy.processes,
                          use_retain=method.needs_retain())
    for _ in range(first_step * cfg.grad_accum):
        next(stream)

    log_file = None
    if out_dir is not None and strategy.main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        log_file = open(Path(out_dir) / "train_log.jsonl", "w")
        for record in result.history:  # a resumed run rewrites the log up to its checkpoint
            log_file.write(json.dumps(record) + "\n")
    while _OPEN_TRACKING:  # an earlier training phase's trackers (SKU's phases, sequential requests)
        _OPEN_TRACKING.pop().finish()
    tracking = Tracking(accelerator, cfg.report_to)
    _OPEN_TRACKING.append(tracking)  # open until the caller logs its evaluation, or the next training starts
    tracking.start(name, {**vars(cfg), "method": name, "strategy": strategy.label,
                          "processes": strategy.processes})
    result.tracking = tracking
    bar = tqdm(total=total, initial=first_step, desc=name,
               disable=not (cfg.progress and strategy.main), leave=False, dynamic_ncols=True)
    model.train()
    step = first_step
    with contextlib.ExitStack() as scope:
        watch = scope.enter_context(_logits_watch(model))
        interrupt = scope.enter_context(_stop_after_step_on_interrupt())
        scope.callback(bar.close)
        if log_file is not None:
            scope.callback(log_file.close)

        def save(at: int) -> Path:
            path = Path(out_dir) / "checkpoints" / f"step-{at}"
            state = gather_state(model, optimizer, strategy.processes > 1)  # every rank: FSDP2 gathers the shards
            if strategy.main and not (path / "trainer_state.json").is_file():
                save_checkpoint(path, skeleton or accelerator.unwrap_model(model), state, scheduler, at,
                                result.history, trained_names, method.state_dict())
            if strategy.processes > 1:
                accelerator.wait_for_everyone()
            return path

        while step < total:
            watch["finite"] = None
            sums, problem = _one_step(model, method, stream, reference, accelerator, strategy, cfg.grad_accum,
                                      params, cfg.sam_rho, cfg.gru)
            if problem is None and watch["finite"] is not None and not bool(watch["finite"]):
                problem = "non-finite logits"
            if _any_rank(problem is not None, strategy, accelerator.device):
                optimizer.zero_grad(set_to_none=True)
                result.stopped = f"{problem or 'non-finite loss on another rank'} at step {step + 1}; kept the weights of step {step}"
                break
            if strategy.name == "deepspeed":  # the engine clips and steps, and skips a non-finite step itself
                model.step()
                norm = torch.as_tensor(float("nan") if model.get_global_grad_norm() is None else model.get_global_grad_norm())
                if not model.was_step_applied():
                    result.stopped = f"non-finite gradient norm at step {step + 1}; kept the weights of step {step}"
                    break
            else:
                norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
                norm = norm.full_tensor() if hasattr(norm, "full_tensor") else torch.as_tensor(norm)
                if not torch.isfinite(norm):
                    optimizer.zero_grad(set_to_none=True)
                    result.stopped = f"non-finite gradient norm at step {step + 1}; kept the weights of step {step}"
                    break
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            record = {"step": step, **sums, "lr": scheduler.get_last_lr()[0], "grad_norm": float(norm)}
            result.history.append(record)
            method.after_step(record)  # e.g. PDU's dual ascent, on the rank-averaged means
            tracking.log({k: v for k, v in record.items() if k != "step"}, step)
            if log_file is not None and (step % cfg.log_every == 0 or step == total):
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in sums.items()})
            if on_step is not None:
                on_step(step, record)
            # every N steps, and the last step: an interrupted evaluation after training can then resume
            if out_dir is not None and cfg.save_every and (step % cfg.save_every == 0 or step == total):
                save(step)
            if _any_rank(interrupt["requested"], strategy, accelerator.device):
                break
        if _any_rank(interrupt["requested"], strategy, accelerator.device):  # Ctrl-C: keep this step, then stop the command
            if out_dir is not None:
                save(step)
            raise KeyboardInterrupt
    if skeleton is not None:
        gather = deepspeed_state.consolidate if strategy.name == "deepspeed" else consolidate
        result.model = gather(model, skeleton, accelerator.device)
        accelerator.free_memory()  # drop the sharded model and optimizer
    else:
        result.model = accelerator.unwrap_model(model)
    result.model.eval()
    result.steps = step
    result.seconds = time.perf_counter() - start
    return result


def _one_step(model, method, stream, reference, accelerator, strategy, grad_accum: int, params=(),
              sam_rho: float = 0.0, gru: bool = False) -> tuple[dict, str | None]:
    """Forward and backward every term of every micro-batch of one optimizer step; returns the logged means
    (averaged over ranks) and the first problem seen on this rank.

    Gradient sync is the engine's: every backward but the step's last runs under `no_sync` (DDP buckets, FSDP2's
    reduce-scatter then reduce the accumulated gradient once). Every rank runs the same forwards and backwards
    even after a non-finite loss (sharded engines gather weights in lockstep); the step is then discarded."""
    sums: dict[str, torch.Tensor] = {}
    problem = None
    for micro in range(grad_accum):
        batch = next(stream).to(accelerator.device)
        terms = method.loss_terms(model, batch, reference)
        for index, term_fn in enumerate(terms):
            last = micro == grad_accum - 1 and index == len(terms) - 1

            def run(fn, sync: bool, last=last):
                alone = sync or strategy.processes == 1 or strategy.name == "deepspeed"  # (DeepSpeed: the boundary)
                with (contextlib.nullcontext() if alone else accelerator.no_sync(model)), accelerator.autocast():
                    out = fn()
                    if strategy.name == "deepspeed":  # the trainer marks the step's boundary; the engine reduces there
                        model.set_gradient_accumulation_boundary(last)
                        model.backward(out.total / grad_accum)
                    else:
                        accelerator.backward(out.total / grad_accum)
                return out

            if sam_rho and index == 0:  # train.sam_rho: the forget term's gradient at the ascent point
                term = ascent_backward(run, term_fn, params, sam_rho, last or gru)
            else:
                term = run(term_fn, last or (gru and index == 0))
            if gru and index == 0:  # train.gru: the forget gradient, before the retain term adds to it
                forget = [None if p.grad is None else p.grad.detach().clone() for p in params]
            if problem is None and not torch.isfinite(term.total.detach()):
                problem = "non-finite loss"
            for key, value in {"loss": term.total, **term.parts}.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / grad_accum
        if gru:
            sums["gru_dot"] = torch.tensor(rectify(params, forget))  # < 0: a conflict was removed
    keys = sorted(sums)
    values = torch.stack([torch.as_tensor(sums[k], device=accelerator.device) for k in keys])
    if strategy.processes > 1:
        values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist())), problem


def _any_rank(flag: bool, strategy, device) -> bool:
    """True when `flag` is set on any data-parallel rank (so every rank stops together)."""
    if strategy.processes == 1:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
