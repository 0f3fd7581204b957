"""Task-vector negation (Ilharco et al., 2023, arXiv:2212.04089), as the attack paper's TV baseline.

Two phases, both through the one trainer:

1. fine-tune a copy on the forget set, L = CE_θ(D_f) (`methods.finetune.Finetune`), giving θ_ft;
2. negate the change:  τ = θ_ft − θ0 (floating-point tensors only),  θ = θ0 − α·τ.

The seeds use α = 1 (SKU's `scaling_coef`) and α = 2 (the attack paper's MUSE `run_tv.sh`, which
fine-tunes 5 epochs at lr 1e-5). The fine-tune uses the recipe's `train:` settings unless
`finetune_epochs` / `finetune_lr` override them. With LoRA (a peft model) only the adapters are
trained; they are merged into the weights before τ is taken, and the result is a plain model.
See `unlearnkit.model.task_arithmetic` for the arithmetic (θ0 is the only extra copy, kept on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from unlearnkit.errors import UnlearnError
from unlearnkit.methods.base import ModelEdit
from unlearnkit.registry import METHODS, Finite, Positive


def finetune_settings(cfg, *, epochs: float | None = None, lr: float | None = None, steps: int | None = None):
    """The recipe's train settings with the phase's overrides (None keeps the recipe's value)."""
    changes = {k: v for k, v in {"epochs": epochs, "lr": lr, "steps": steps}.items() if v is not None}
    if epochs is not None and steps is None:
        changes["steps"] = None  # an epoch override decides the length, not the recipe's steps
    return dataclasses.replace(cfg, **changes)


def check_positive(method: str, **values: float | None) -> None:
    for field, value in values.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UnlearnError(f"method '{method}': field '{field}' must be a positive number or null"
                               f" (got {value!r}); fix the value in the recipe or override")


@METHODS.register("task_vector")
@dataclass
class TaskVector(ModelEdit):
    """Fine-tune on the forget set, then subtract α times the weight change (task-vector negation)."""

    alpha: Finite = 1.0  # negation scale: θ = θ0 − α·(θ_ft − θ0)
    finetune_epochs: Positive | None = None  # None: the recipe's train.epochs / train.steps
    finetune_lr: Positive | None = None  # None: the recipe's train.lr

    def __post_init__(self) -> None:
        if not math.isfinite(self.alpha):
            raise UnlearnError(f"method 'task_vector': field 'alpha' must be a finite number (got {self.alpha!r});"
                               " the seeds use 1 or 2")
        check_positive("task_vector", finetune_epochs=self.finetune_epochs, finetune_lr=self.finetune_lr)

    def apply(self, model, data, cfg, *, out_dir=None):
        from unlearnkit.methods.finetune import Finetune
        from unlearnkit.model import merge_lora
        from unlearnkit.model.task_arithmetic import negate_in_place, snapshot
        from unlearnkit.train import train

        base = snapshot(model)  # θ0 (LoRA: only the weights under the adapters)
        result = train(model, Finetune(), data, finetune_settings(cfg, epochs=self.finetune_epochs,
                                                                   lr=self.finetune_lr), out_dir=out_dir)
        result.model = negate_in_place(merge_lora(result.model), base, self.alpha).eval()
        return result
