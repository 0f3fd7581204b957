"""Relearning attack: fine-tune the unlearned model on a few forget samples and see what comes back.

ERU (methods spec §6.4, §7.1) measures robustness as the fraction of the unlearning gain a model keeps
after fine-tuning on N forget-domain samples (N = 1,000 there; "keeps 83 %"). Its exact attack recipe is
not public; here the attack is plain full fine-tuning through THE trainer (`train.train`) with the
`Finetune` objective (answer-token NLL; `RelearnObjective`), on a DEEP COPY of the unlearned model,
so the model being attacked is never modified:

* N forget rows are drawn without replacement with `random.Random(seed)`;
* K optimizer steps of AdamW at a constant learning rate, batches of `batch_size` drawn by the
  trainer's seeded stream (the N rows are cycled);
* every parameter trains, GRUN's representation edits included (``train_edits=True``: the attacker
  fine-tunes the released model as it is served); ``train_edits=False`` freezes the edits and attacks
  the base weights only.

* the loss is scored as the model runs at inference: GRUN's edits act at each row's last prompt token
  (`edits.edit_positions`, as in evaluation and generation). A plain forward would put the edit on
  the last token of the answer instead, so the attacker would fine-tune a model whose edit is off
  where it matters and the attack would look weaker than it is.

`forgetting_kept` turns before / after-unlearning / after-relearning metrics into the robustness number.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from torch import nn

from unlearnkit.attacks.base import Attack, AttackRow, AttackTarget
from unlearnkit.data.texts import load_rows
from unlearnkit.errors import UnlearnError
from unlearnkit.methods.finetune import Finetune
from unlearnkit.model.edits import ATTRIBUTE as EDITS_ATTRIBUTE
from unlearnkit.registry import ATTACKS, NonNegativeInt, Positive, PositiveInt


@dataclass
class RelearnObjective(Finetune):
    """`Finetune` (answer NLL) with representation edits placed at the prompt's end, as at inference."""

    registry_name = "relearn"

    def loss(self, model, batch, ref):
        from unlearnkit.model.edits import edit_positions  # a no-op for a model without edits
        from unlearnkit.model.hooks import prompt_end_positions

        with edit_positions(model, prompt_end_positions(batch.forget.labels)):
            return super().loss(model, batch, ref)


def relearn(model: nn.Module, tokenizer: Any, forget_rows: Sequence[dict], fmt: Any, *, n_samples: int = 10,
            steps: int = 10, lr: float = 3e-4, batch_size: int = 4, seed: int = 0, max_length: int | None = 512,
            train_edits: bool = True, progress: bool = False, lora_r: int = 0,
            on_step: Callable[[int, nn.Module], None] | None = None) -> nn.Module:
    """Fine-tune a deep copy of `model` on `n_samples` forget rows for `steps` steps; return the copy.

    Rows with ``question`` and ``answer`` are encoded with `fmt` (loss on the answer only); bare-text
    rows (``{"text": ...}``, e.g. harvested refusals) as text, every token supervised. `lora_r` > 0 trains
    LoRA adapters of that rank on the copy instead of its weights. `on_step(step, copy)` runs after each step."""
    from unlearnkit.data.pairing import UnlearnData, encode_rows
    from unlearnkit.data.texts import encode_text_rows
    from unlearnkit.train import TrainConfig, train

    if not forget_rows:
        raise UnlearnError("the relearning attack needs forget rows; the forget set is empty")
    if n_samples < 1 or steps < 1 or batch_size < 1:
        raise UnlearnError(f"attacks.relearn needs n_samples, steps and batch_size ≥ 1 "
                           f"(got {n_samples}, {steps}, {batch_size})")
    rows = random.Random(seed).sample(list(forget_rows), min(n_samples, len(forget_rows)))
    if all("question" in r and "answer" in r for r in rows):
        examples = encode_rows(rows, tokenizer, fmt, max_length=max_length)
    else:
        examples = encode_text_rows(rows, tokenizer, max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = UnlearnData(examples, pad_id=pad_id)

    attacked = copy.deepcopy(model)
    for name, param in attacked.named_parameters():  # unlearning froze what its method did not train
        param.requires_grad_(train_edits or EDITS_ATTRIBUTE not in name.split("."))
    if lora_r:
        from unlearnkit.model.loading import LoraSpec, wrap_lora

        attacked = wrap_lora(attacked, LoraSpec(r=lora_r, alpha=2 * lora_r))
    device = str(next(model.parameters()).device)  # the attacker fine-tunes where the model runs
    cfg = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=progress,
                      max_grad_norm=1.0, device=device)
    callback = None if on_step is None else (lambda step, record: on_step(step, attacked))
    return train(attacked, RelearnObjective(), data, cfg, on_step=callback).model


def forgetting_kept(before: dict | None, after_unlearn: dict | None, after_relearn: dict | None,
                    key: str = "forget_prob", lower_is_forgotten: bool = True) -> float | None:
    """Fraction of the unlearning effect on metric `key` that survives the attack, in [0, 1].

    With b = before[key] (starting model), u = after_unlearn[key], r = after_relearn[key]:

        kept = (r − b) / (u − b)      clipped to [0, 1]

    For a metric that unlearning lowers (``lower_is_forgotten``, e.g. forget_prob, forget_rouge):
    1 = the attack recovered nothing (r ≤ u), 0 = fully recovered (r ≥ b); 0.83 = ERU's "keeps 83 %".
    The formula is the same for a metric that unlearning raises; only the direction of "did unlearning
    do anything" changes. None when a value is missing or not finite, or when unlearning did not move
    the metric in the forgetting direction (u − b ≥ 0 for a lower-is-forgotten metric), since then there
    is no effect to keep.
    """
    values = [(d or {}).get(key) for d in (before, after_unlearn, after_relearn)]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return None
    b, u, r = (float(v) for v in values)
    effect = u - b
    if (effect >= 0) if lower_is_forgotten else (effect <= 0):
        return None
    return min(1.0, max(0.0, (r - b) / effect))


@ATTACKS.register("relearn")
@dataclass
class Relearn(Attack):
    """Relearning: fine-tune a copy on a few forget-domain (or benign) rows, re-measuring every k steps."""

    n_samples: PositiveInt = 10  # rows the attacker fine-tunes on (a seeded choice)
    steps: PositiveInt = 10
    lr: Positive = 3.0e-4  # chosen for the tiny world (docs/robustness.md); raise it for a stronger attack
    batch_size: PositiveInt = 4
    train_edits: bool = True  # GRUN: the attacker fine-tunes the edits too (false: base weights only)
    source: str = "forget"  # forget: the benchmark's forget rows; retain: benign rows; file: `data_file`
    data_file: str | None = None  # a .jsonl / .json / .txt of rows to fine-tune on (source=file)
    lora_r: NonNegativeInt = 0  # > 0: the attacker trains LoRA adapters of this rank instead of the weights
    every: NonNegativeInt = 5  # > 0: re-measure every k steps (the report's recovery curve); 0: only at the end
    cheap: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.source not in ("forget", "retain", "file"):
            raise UnlearnError(f"attacks.relearn.source must be forget, retain or file, not '{self.source}'")
        if (self.source == "file") != (self.data_file is not None):
            raise UnlearnError("attacks.relearn: give data_file together with source=file (and only then)")

    def check(self, bench) -> None:
        super().check(bench)
        rows = {"forget": bench.train_forget, "retain": bench.train_retain}.get(self.source, [None])
        if not rows:
            raise UnlearnError(f"attacks.relearn.source={self.source}: {bench.name} has no such rows here; give"
                               " attacks.relearn.source=file attacks.relearn.data_file=ROWS.jsonl")

    def rows(self, target: AttackTarget) -> list[dict]:
        if self.source == "file":
            return load_rows(self.data_file)
        return list(target.bench.train_forget if self.source == "forget" else target.bench.train_retain)

    def run(self, target: AttackTarget) -> list[AttackRow]:
        rows = self.rows(target)
        used = min(self.n_samples, len(rows))
        curve: list[dict] = []

        def measure(step: int, model) -> None:
            if self.every and step % self.every == 0 and step < self.steps:
                curve.append({"step": step, **target.measure(model, target.bench)})

        target.log(f"relearning attack: fine-tuning a copy on {used} {self.source} rows for {self.steps} steps")
        attacked = relearn(target.model, target.tokenizer, rows, target.fmt, n_samples=self.n_samples,
                           steps=self.steps, lr=self.lr, batch_size=self.batch_size, seed=target.seed,
                           max_length=target.max_length, train_edits=self.train_edits, progress=target.progress,
                           lora_r=self.lora_r, on_step=measure if self.every else None)
        metrics = target.measure(attacked, target.bench)
        del attacked
        if self.every:
            curve = [{"step": 0, **target.measure(target.model, target.bench)}, *curve,
                     {"step": self.steps, **metrics}]
        how = f"LoRA r {self.lora_r}" if self.lora_r else "full"
        label = f"relearned ({used} {self.source} rows, {self.steps} steps, lr {self.lr:g}, {how})"
        return [AttackRow(label, metrics, {**self.settings(), "samples_used": used}, curve or None)]
