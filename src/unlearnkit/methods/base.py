"""What every unlearning method provides. The trainer does everything else.

A method is a dataclass of hyperparameters with two hooks:

* `prepare(model)` returns the parameters to train (everything else is frozen by the trainer);
* `loss(model, batch, ref)` returns a `LossOutput`: the scalar to minimise and named parts to log.

`reference` says what the method needs from the frozen starting model:
``None`` (nothing), ``"logprobs"`` (only sequence log-probs of fixed data — the trainer computes
them once, caches them and can drop the copy), or ``"model"`` (full outputs, e.g. KL).

Multi-phase methods that edit weights (task vectors, SKU) are `ModelEdit`s instead: they get the
model, the data and the train settings, and call the one trainer with a helper objective.

Class attributes shared by both kinds tell the pipeline what data to build: `uses_retain`
(pair retain rows), `extra_views` (e.g. ``("idk",)`` or ``("generic",)``, aligned row-for-row with
the forget set) and `forget_format` (``"qa"``: prompt masked, answer supervised; ``"text"``: the
row as bare text with every token supervised and no prompt, as the attack paper's unlearning data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Callable, ClassVar, Iterable

import torch
from pydantic import AfterValidator, BeforeValidator
from torch import nn

from unlearnkit.data.batch import UnlearnBatch
from unlearnkit.data.pairing import UnlearnData
from unlearnkit.registry import NonNegative


_LAYER = "must be a block index (an int, negative from the end) or a fraction of depth in [0, 1]"


def _layer_input(value):
    if isinstance(value, bool):
        raise ValueError(_LAYER)
    return value


def _layer(value: int | float) -> int | float:
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(_LAYER)
    return value


# A decoder block, as `hooks.resolve_layers` reads it: an index (int) or a fraction of depth (float in [0, 1]).
# Field types carry their ranges (see `unlearnkit.registry`): METHODS.build refuses out-of-range values.
Layer = Annotated[int | float, BeforeValidator(_layer_input), AfterValidator(_layer)]


@dataclass
class LossOutput:
    total: torch.Tensor  # the scalar the trainer backpropagates
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # logged, never backpropagated


class UnlearningMethod:
    """A per-batch objective over forget (and optionally retain) examples."""

    reference: ClassVar[str | None] = None  # None | "logprobs" | "model"
    uses_retain: ClassVar[bool] = False  # the data loader pairs retain examples when True
    extra_views: ClassVar[tuple[str, ...]] = ()  # e.g. ("idk",): alternative answers per forget row
    forget_format: ClassVar[str] = "qa"  # "qa" (answer supervised) | "text" (bare text, all supervised)

    def needs_reference(self) -> str | None:
        """What this instance needs from the reference (may depend on fields, e.g. KL retain)."""
        return self.reference

    def needs_retain(self) -> bool:
        return self.uses_retain

    def runs_inner_backward(self) -> bool:
        """Whether the loss runs backward passes of its own (an inner adversary such as latent PGD): DeepSpeed's
        engine hooks every backward through the model, so the trainer refuses such a method under DeepSpeed."""
        return False

    def prepare(self, model: nn.Module) -> Iterable[nn.Parameter]:
        """Attach adapters or choose what to train. Everything not returned is frozen.

        Items are parameters (trained at the recipe's train.lr) or optimizer groups
        ``{"params": [...], "lr": x}`` with a learning rate of their own, or
        ``{"params": [...], "lr_scale": k}`` trained at k × train.lr.
        """
        return [p for p in model.parameters() if p.requires_grad]

    def setup(self, data: UnlearnData) -> None:
        """Called once by the trainer before the first step with the training data (after `prepare`).

        For methods that need more than the current batch, e.g. contrast sets drawn from the whole
        forget and retain data. No-op by default.
        """

    def loss(self, model: nn.Module, batch: UnlearnBatch, ref) -> LossOutput:  # pragma: no cover
        raise NotImplementedError

    def after_step(self, record: dict[str, float]) -> None:
        """Called by the trainer after each optimizer step with the step's logged means (every loss part, averaged
        over micro-batches and ranks, so every rank sees the same numbers): for state that follows the training,
        e.g. PDU's dual variable. No-op by default."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The method's own training state (step counters, RNG, cached directions) as tensors. The trainer saves it
        in every checkpoint and gives it back with `load_state_dict` on resume (after `setup`), so a resumed run
        continues exactly. Empty for stateless objectives."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""

    def loss_terms(self, model: nn.Module, batch: UnlearnBatch, ref) -> list[Callable[[], LossOutput]]:
        """The objective as terms the trainer computes and backpropagates one at a time (their sum is `loss`):
        each item computes its term when called.

        Backpropagating each term before computing the next frees its activations first, so peak memory is
        the largest term's, not the sum. Functions rather than values, because under DDP / FSDP2 the trainer
        must know which term is the step's last *before* its forward: gradients are synchronised on that
        term's backward only. One term by default.
        """
        return [lambda: self.loss(model, batch, ref)]


def summed(terms: list[Callable[[], LossOutput]]) -> LossOutput:
    """All of `terms` computed, as one loss in one graph (their totals added, their parts merged)."""
    outputs = [term() for term in terms]
    return LossOutput(sum(out.total for out in outputs), {k: v for out in outputs for k, v in out.parts.items()})


@dataclass
class RetainRegularised(UnlearningMethod):
    """Base for objectives of the form  L = γ·L_forget + α·L_retain.

    Subclasses write `forget_loss` only. γ = `forget_weight`, α = `retain_weight`; L_retain is NLL on
    retain data or KL(π_ref ‖ π_θ) (`retain_loss`, see `methods/retain.py`); a KL retain term needs
    the full reference model. The trainer gets the two terms separately (`loss_terms`).
    """

    forget_weight: NonNegative = 1.0
    retain_weight: NonNegative = 1.0
    retain_loss: str = "nll"  # nll | kl
    uses_retain: ClassVar[bool] = True

    def __post_init__(self) -> None:
        from unlearnkit.methods.retain import check_retain_loss

        check_retain_loss(self.retain_loss)

    def needs_reference(self) -> str | None:
        return "model" if self.retain_loss == "kl" else self.reference

    def forget_loss(self, model: nn.Module, batch: UnlearnBatch, ref) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_forget and extra values to log."""  # pragma: no cover
        raise NotImplementedError

    def _retain(self, model: nn.Module, batch: UnlearnBatch, ref) -> torch.Tensor:
        from unlearnkit.methods.retain import retain_term

        return retain_term(self.retain_loss, model, batch, ref)

    def loss(self, model: nn.Module, batch: UnlearnBatch, ref) -> LossOutput:
        """γ·L_forget + α·L_retain in one graph, with both terms (and logged extras) as parts."""
        forget, logged = self.forget_loss(model, batch, ref)
        retain = self._retain(model, batch, ref)
        total = self.forget_weight * forget + self.retain_weight * retain
        return LossOutput(total, {"forget": forget, "retain": retain, **{k: v.detach() for k, v in logged.items()}})

    def loss_terms(self, model: nn.Module, batch: UnlearnBatch, ref) -> list[Callable[[], LossOutput]]:
        def forget_term() -> LossOutput:
            forget, logged = self.forget_loss(model, batch, ref)
            return LossOutput(self.forget_weight * forget, {"forget": forget, **{k: v.detach() for k, v in logged.items()}})

        def retain_term() -> LossOutput:
            retain = self._retain(model, batch, ref)
            return LossOutput(self.retain_weight * retain, {"retain": retain})

        return [forget_term] + ([retain_term] if batch.retain is not None and self.retain_weight != 0 else [])


class ModelEdit:
    """A method that produces new weights in phases, e.g. fine-tune a copy, then negate the change.

    `apply` trains through `unlearnkit.train.train` (with a helper objective) and returns the
    trainer's `TrainResult` with `model` set to the edited model and `trainable_params` the count
    the phases trained. It owns no optimizer or loop of its own.
    """

    uses_retain: ClassVar[bool] = False
    extra_views: ClassVar[tuple[str, ...]] = ()
    forget_format: ClassVar[str] = "qa"

    def needs_retain(self) -> bool:
        return self.uses_retain

    def apply(self, model: nn.Module, data: UnlearnData, cfg, *, out_dir=None):  # pragma: no cover
        raise NotImplementedError
