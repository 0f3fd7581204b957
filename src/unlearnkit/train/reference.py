"""The frozen reference model (π_ref), owned by the trainer and handed to methods.

Two ways to hold it:

* full training: a frozen deep copy of the starting model;
* LoRA (peft): the *same* model with its adapters disabled during the reference call — no
  second copy of the weights;
* representation edits (GRUN, `unlearnkit.model.edits`): the same frozen model with the edits switched
  off — again no copy.

Methods that need only sequence log-probs of fixed data (NPO, DPO) get them from a cache keyed by each
row's content: the trainer computes every forget/extra sequence once with the model itself, before the first
step (`Reference.cached`; sharded or not), and keeps only the cache, so NPO costs no more memory than gradient
ascent. Under FSDP2 a method that needs the whole frozen model gets a copy sharded like the model (`shard`).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterable

import torch
from torch import nn

from unlearnkit.data.batch import TokenBatch
from unlearnkit.losses import sequence_logprob_from_logits


def is_peft_model(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def shares_weights(model: nn.Module) -> bool:
    """The reference of a LoRA or edited model is the model itself with adapters / edits off."""
    from unlearnkit.model.edits import has_edits

    return is_peft_model(model) or has_edits(model)


class Reference:
    """π_ref: logits and (cached) sequence log-probs, always without gradients."""

    def __init__(self, model: nn.Module | None, *, shares_weights: bool,
                 autocast: Callable[[], Any] = contextlib.nullcontext):
        self._model = model
        self.shares_weights = shares_weights
        self._autocast = autocast
        self._cache: dict[bytes, tuple[float, int]] = {}  # row key -> (summed log-prob, n tokens)
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_model(cls, model: nn.Module, autocast: Callable[[], Any] = contextlib.nullcontext,
                   shard: Callable[[nn.Module], nn.Module] | None = None) -> "Reference":
        """LoRA models and edited models share weights (adapters / edits off); anything else gets a
        frozen deep copy, sharded by `shard` (the trainer passes FSDP2's when the model is sharded)."""
        if shares_weights(model):
            return cls(model, shares_weights=True, autocast=autocast)
        frozen = copy.deepcopy(model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        if shard is not None:
            frozen = shard(frozen)
        return cls(frozen, shares_weights=False, autocast=autocast)

    @classmethod
    def cached(cls, model: nn.Module, batches: Iterable[TokenBatch],
               autocast: Callable[[], Any] = contextlib.nullcontext) -> "Reference":
        """Sequence log-probs of `batches` under `model` as it is now (the starting model, before the first
        step; sharded or not: no copy at all), then only the cache."""
        reference = cls(model, shares_weights=True, autocast=autocast)
        reference.precompute(batches)
        reference.release()
        return reference

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            raise RuntimeError("the reference copy was released; only cached log-probs remain")
        return self._model

    def _context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(self._autocast())
        if self.shares_weights:
            from unlearnkit.model.edits import edits_disabled

            if is_peft_model(self.model):
                stack.enter_context(self.model.disable_adapter())
            stack.enter_context(edits_disabled(self.model))
        return stack

    def logits(self, batch: TokenBatch) -> torch.Tensor:
        with self._context():
            was_training = self.model.training
            self.model.eval()
            try:
                return self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
            finally:
                self.model.train(was_training)

    def hidden_states(self, batch: TokenBatch, layers: list[int]) -> dict[int, torch.Tensor]:
        """Block outputs {ℓ: (B, T, d)} of the reference on `batch` (no gradients)."""
        from unlearnkit.model.hooks import capture_outputs

        with self._context():
            was_training = self.model.training
            self.model.eval()
            try:
                with capture_outputs(self.model, layers) as captured:
                    self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                return {k: v.float() for k, v in captured.items()}
            finally:
                self.model.train(was_training)

    def sequence_logprob(self, batch: TokenBatch, mean: bool = False) -> torch.Tensor:
        """(B,) reference log-probs; computed once per distinct row, then served from the cache."""
        keys = batch.row_keys()
        if any(k not in self._cache for k in keys):
            self.misses += 1
            total = sequence_logprob_from_logits(self.logits(batch), batch.labels)
            counts = (batch.labels[:, 1:] != -100).sum(-1)
            for k, t, n in zip(keys, total.tolist(), counts.tolist()):
                self._cache[k] = (t, n)
        else:
            self.hits += 1
        values = [self._cache[k][0] / max(self._cache[k][1], 1) if mean else self._cache[k][0] for k in keys]
        return torch.tensor(values, dtype=torch.float32, device=batch.input_ids.device)

    def precompute(self, batches: Iterable[TokenBatch]) -> None:
        for batch in batches:
            self.sequence_logprob(batch)

    def release(self) -> None:
        """Keep only the cached log-probs: drop the frozen copy, or the handle on the shared model."""
        self._model = None
