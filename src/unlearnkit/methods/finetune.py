"""Plain supervised fine-tuning, L = CE_θ(B) on the "forget" slot of the batch.

Not an unlearning method (it is not registered): the world builder uses it to teach the tiny
models their facts, and model edits such as task vectors use it to fit the forget set, all
through the one trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.losses import nll
from unlearnkit.methods.base import LossOutput, UnlearningMethod


@dataclass
class Finetune(UnlearningMethod):
    """Minimise NLL on the data (fine-tuning)."""

    registry_name = "finetune"

    def loss(self, model, batch, ref):
        value = nll(model, batch.forget)
        return LossOutput(value, {"nll": value})
