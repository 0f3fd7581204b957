"""ME+GD: maximum entropy on the forget set plus gradient descent on the retain set (Yuan et al., 2024,
"A Closer Look at Machine Unlearning for Large Language Models", arXiv:2410.08109).

Gradient ascent pushes forget answers towards "anything else", an unbounded target that ends in
gibberish or hallucinated answers. ME gives untargeted unlearning a fixed target instead: at every
forget position the next-token distribution should be uniform over the V-token vocabulary U, the
output of a model that knows nothing about the question. With π_θ(·|x_<t) the model's prediction at
position t of a forget sequence x and P the positions taken (`positions`):

    L_forget = mean_{t∈P} KL(U ‖ π_θ(·|x_<t)) = mean_{t∈P} [−log V − (1/V)·Σ_v log π_θ(v|x_<t)]
    L        = γ·L_forget + α·L_retain      (γ = forget_weight, α = retain_weight; L_retain: NLL or KL)

L_forget is 0 exactly for a model whose predictions are uniform and positive otherwise. The mean is
token-weighted over the batch, like `nll`.

Choices where the paper and its code differ or say little:

* KL direction: the name ("maximum entropy") and specs/field-methods §1.4 read the term as
  KL(π ‖ U) = log V − H(π); the authors' code (`get_me_loss`, F.kl_div(log π, U)) computes KL(U ‖ π).
  We use KL(U ‖ π), what produced the paper's numbers. Both are 0 exactly at the uniform distribution
  and positive elsewhere; KL(U ‖ π)'s gradient in the logits is π − U, which does not vanish on a
  confident (near one-hot) model, where the entropy's gradient does.
* positions: "all" (default) takes every next-token prediction of the forget sequence, question
  included, as the authors ran ME+GD (`mask: false`, "false for ME+GD" in their tofu.yaml); "answer"
  takes the supervised answer tokens only. Padding is never counted (the authors' `mask: false`
  also counted padded positions, since their labels there are the EOS pad token).
* Defaults are the authors' TOFU script (scripts/tofu/me_gd.sh): γ = 0.1, α = 1, NLL retain
  (lr 1e-5 for 5 epochs there; learning rate and steps are the recipe's `train` settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.errors import UnlearnError
from unlearnkit.losses import kl_from_uniform, logits_of, shifted_labels
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.registry import METHODS, NonNegative

POSITIONS = ("all", "answer")


@METHODS.register("me_gd")
@dataclass
class MEGD(RetainRegularised):
    """Push forget-token predictions to uniform (maximum entropy), plus retain NLL."""

    forget_weight: NonNegative = 0.1  # the authors' forget_coeff for ME+GD
    positions: str = "all"  # all | answer

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.positions not in POSITIONS:
            raise UnlearnError(f"positions must be one of {', '.join(POSITIONS)}, got '{self.positions}'")

    def forget_loss(self, model, batch, ref):
        forget = batch.forget
        if self.positions == "all":
            mask = forget.attention_mask[:, 1:].bool()  # every real next token, prompt included
        else:
            mask = shifted_labels(forget.labels)[1]
        return kl_from_uniform(logits_of(model, forget), mask), {}
