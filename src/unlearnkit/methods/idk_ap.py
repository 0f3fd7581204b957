"""IDK+AP: "I don't know" answers on forget questions, with answer preservation on retain questions
(Yuan et al., 2024, "A Closer Look at Machine Unlearning for Large Language Models", arXiv:2410.08109).

IDK fine-tuning teaches refusal on the forget questions, but the refusal spreads: retain questions
start to get "I don't know" too, and plain NLL on retain answers does not stop it. The
answer-preservation (AP) term asks instead that on each retain question x_r the model keep preferring
the true answer y_r over an IDK answer y_idk. With summed log-probs of the supervised answer tokens:

    L_IDK = CE_θ(x_f, y_idk)                                        token-weighted mean, as idk.py
    L_AP  = −(1/β) · mean_b log σ(β · (log π_θ(y_r|x_r) − log π_θ(y_idk|x_r)))
    L     = γ · L_IDK + α · L_AP                                    γ = forget_weight, α = retain_weight

AP is DPO-shaped, but both sides are scored by π_θ itself: there is no reference model, so nothing is
built or cached (`needs_reference()` is None). Its gradient is
σ(β·(log π_θ(y_idk|x_r) − log π_θ(y_r|x_r))) · ∇(log π_θ(y_idk|x_r) − log π_θ(y_r|x_r)): it raises
the retain answer and lowers the IDK answer on retain questions, and fades once the true answer leads
by a margin of several 1/β. When the two log-probs are equal, L_AP = (1/β)·log 2.

Choices:

* Defaults are the authors' (scripts/tofu/idk_ap.sh, config/tofu.yaml): β = 0.1, γ = α = 1.
* L_AP is the whole regulariser, as in the authors' code (`get_loss` with "IDK+AP" adds ap_loss and
  nothing else). specs/field-methods §1.5 guessed a margin against π_ref plus retain NLL; the paper's
  objective has neither.
* y_idk on a retain question is the IDK answer of the forget row in the same batch position, as the
  authors pair one IDK answer per item for both the forget and the retain side. The retain prompt's
  tokens and the IDK answer's tokens are joined at the token level (`with_answers_of`), so nothing is
  tokenised twice; a joined row may exceed data.max_length by the length difference of the answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from unlearnkit.data.batch import IGNORE_INDEX, Example, TokenBatch, collate
from unlearnkit.losses import nll, sequence_logprob
from unlearnkit.methods.base import LossOutput, UnlearningMethod, summed
from unlearnkit.model.hooks import prompt_end_positions
from unlearnkit.registry import METHODS, NonNegative, Positive


def with_answers_of(prompts: TokenBatch, answers: TokenBatch, pad_id: int = 0) -> TokenBatch:
    """Row i: the prompt of `prompts` row i (its tokens before the first supervised one, unlabelled), then
    the answer of `answers` row i (its tokens from the first supervised one to its last real token, with
    their labels). Right-padded like `collate`; the two batches must have the same number of rows."""
    prompt_ends = (prompt_end_positions(prompts.labels) + 1).tolist()  # first supervised index per row
    answer_starts = (prompt_end_positions(answers.labels) + 1).tolist()
    answer_ends = answers.attention_mask.sum(-1).tolist()  # right padding: the row's length
    rows = []
    for i, (p_end, a_start, a_end) in enumerate(zip(prompt_ends, answer_starts, answer_ends)):
        ids = prompts.input_ids[i, :p_end].tolist() + answers.input_ids[i, a_start:a_end].tolist()
        labels = [IGNORE_INDEX] * p_end + answers.labels[i, a_start:a_end].tolist()
        rows.append(Example(tuple(ids), tuple(labels)))
    return collate(rows, pad_id).to(prompts.input_ids.device)


@METHODS.register("idk_ap")
@dataclass
class IDKAP(UnlearningMethod):
    """IDK answers on forget questions; retain answers kept preferred over IDK answers (AP)."""

    beta: Positive = 0.1  # divides: (1/β)
    forget_weight: NonNegative = 1.0
    retain_weight: NonNegative = 1.0
    uses_retain: ClassVar[bool] = True
    extra_views = ("idk",)

    def answer_preservation(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """L_AP and the mean margin log π_θ(y_r|x_r) − log π_θ(y_idk|x_r)."""
        retain_idk = with_answers_of(batch.retain, batch.extra["idk"])
        margin = sequence_logprob(model, batch.retain) - sequence_logprob(model, retain_idk)  # (B,)
        return F.softplus(-self.beta * margin).mean() / self.beta, margin.mean()

    def loss_terms(self, model, batch, ref):
        def forget_term() -> LossOutput:
            idk_nll = nll(model, batch.extra["idk"])
            return LossOutput(self.forget_weight * idk_nll, {"forget": idk_nll})

        def retain_term() -> LossOutput:
            ap, margin = self.answer_preservation(model, batch)
            return LossOutput(self.retain_weight * ap, {"retain": ap, "ap_margin": margin.detach()})

        return [forget_term] + ([retain_term] if batch.retain is not None and self.retain_weight != 0 else [])

    def loss(self, model, batch, ref) -> LossOutput:
        return summed(self.loss_terms(model, batch, ref))
