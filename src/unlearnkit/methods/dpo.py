"""DPO for unlearning with an "I don't know" answer preferred over the forget answer (TOFU's IdkDPO).

For each forget question x: y_w = an IDK answer (chosen once per row), y_l = the true forget
answer. With summed log-probs and π_ref the frozen starting model:

    m        = β · [(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))]
    L_forget = −(2/β) · mean_b log σ(m)
    L        = γ · L_forget + α · L_retain

The 2/β factor follows OpenUnlearning (standard DPO has none). At the start m = 0, so
L_forget = (2/β)·log 2. Defaults: β = 0.1, γ = α = 1, NLL retain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from unlearnkit.losses import sequence_logprob
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS, Positive


@METHODS.register("dpo")
@dataclass
class DPO(RetainRegularised):
    """DPO preferring an "I don't know" answer over the forget answer."""

    beta: Positive = 0.1  # divides: (2/β)
    extra_views = ("idk",)
    reference = "logprobs"  # cached once for the fixed forget and IDK sequences

    def forget_loss(self, model, batch, ref):
        idk = batch.extra["idk"]
        chosen = sequence_logprob(model, idk) - sequence_logprob(ref, idk)
        rejected = sequence_logprob(model, batch.forget) - sequence_logprob(ref, batch.forget)
        margin = self.beta * (chosen - rejected)
        forget = -(2 / self.beta) * F.logsigmoid(margin).mean()
        return forget, {"margin": margin.mean()}
