"""DPO towards generic text: the attack paper's "DPO" baseline (USA Scenario I, specs/methods.md §1.5(a)).

Every forget row is the dispreferred side r, as bare text (no prompt, no chat template, every token
supervised); the preferred side c is a generic text, pair i being (generic_{i mod |pool|}, forget_i),
as the seed cycles its 509 Wikipedia passages (`data.generic_file`; the retain rows as text by
default). With summed log-probs and π_ref the frozen starting model (trl's `sigmoid` loss):

    m = β · [(log π_θ(c) − log π_ref(c)) − (log π_θ(r) − log π_ref(r))]
    L = −mean_b log σ(m)

No 2/β factor and no retain term (the seed has neither; `dpo` is TOFU's IDK-preferred variant).
At the start π_θ = π_ref, so m = 0 and L = log 2. β = 0.1 is LLaMA-Factory's default, which the seed
script does not change. Reference log-probs of the fixed texts are computed once and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F

from unlearnkit.errors import UnlearnError
from unlearnkit.losses import sequence_logprob
from unlearnkit.methods.base import LossOutput, UnlearningMethod
from unlearnkit.registry import METHODS, Positive


@METHODS.register("dpo_generic_preferred")
@dataclass
class DPOGenericPreferred(UnlearningMethod):
    """DPO preferring a generic text over the forget text (bare text, empty prompt)."""

    beta: Positive = 0.1
    reference = "logprobs"  # cached once for the fixed forget and generic texts
    extra_views = ("generic",)
    forget_format = "text"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise UnlearnError(f"method 'dpo_generic_preferred': field 'beta' must be a positive number"
                               f" (got {self.beta!r}); the seed uses 0.1")

    def loss(self, model, batch, ref):
        generic = batch.extra["generic"]
        chosen = sequence_logprob(model, generic) - sequence_logprob(ref, generic)
        rejected = sequence_logprob(model, batch.forget) - sequence_logprob(ref, batch.forget)
        margin = self.beta * (chosen - rejected)
        loss = -F.logsigmoid(margin).mean()
        return LossOutput(loss, {"margin": margin.mean(), "chosen": chosen.mean(), "rejected": rejected.mean()})
