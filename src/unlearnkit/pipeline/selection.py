"""Evaluation during training and checkpoint selection.

Every `every` optimizer steps the model in training is scored, and a copy of its trainable
parameters is kept when the step is the best so far under the rule. At the end the selected weights
are loaded back, and the report records the step (`selection`).

The score is cheap by default: `forget_prob` and `retain_prob` from one teacher-forced pass over the
forget and retain rows, with no generation. `metrics: full` runs the benchmark's whole suite instead,
which adds forget quality and model utility.

Rules:

* `best`: the step with the best `metric` (`mode` max or min), among the steps where
  `constraint_metric` (retain_prob; model_utility with `metrics: full`) ≥ `min_retain_ratio` × its value
  before training (the utility constraint), e.g. best forget_quality with model_utility ≥ 0.9×;
* `first_at_or_below`: MUSE's stopping rule, the first step whose `metric` is at or below `target`
  (e.g. the retain model's forget_prob). When none reaches it, the last step is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from unlearnkit.errors import UnlearnError

RULES = ("best", "first_at_or_below")


def cheap_metrics(model, tokenizer, forget_rows: list[dict], retain_rows: list[dict], fmt,
                  batch_size: int = 32) -> dict[str, float]:
    """forget_prob and retain_prob (mean over rows of exp(−mean answer NLL)), teacher-forced, no generation."""
    from unlearnkit.benchmarks.passes import score_examples
    from unlearnkit.data.pairing import encode_rows
    from unlearnkit.metrics.likelihood import normalised_probability

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = {}
    for name, rows in (("forget_prob", forget_rows), ("retain_prob", retain_rows)):
        summed, counts = score_examples(model, encode_rows(rows, tokenizer, fmt), pad_id, batch_size)
        out[name] = float(np.mean(normalised_probability(summed, counts)))
    return out


@dataclass
class CheckpointSelector:
    """A trainer `on_step` callback that scores the model and remembers the selected weights."""

    model: nn.Module
    score: Callable[[nn.Module], dict[str, float]]
    every: int
    rule: str = "best"
    metric: str = "forget_prob"
    mode: str = "min"
    min_retain_ratio: float | None = 0.9
    target: float | None = None
    constraint_metric: str = "retain_prob"  # what min_retain_ratio constrains (e.g. model_utility with metrics: full)
    start: dict[str, float] = field(default_factory=dict)  # metrics before training (the constraint's base)
    history: list[dict] = field(default_factory=list)
    selected_step: int | None = None
    _kept: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise UnlearnError(f"eval.select.rule '{self.rule}' is unknown; valid: {', '.join(RULES)}")
        if self.mode not in ("max", "min"):
            raise UnlearnError(f"eval.select.mode must be max or min, got '{self.mode}'")
        if self.rule == "first_at_or_below" and self.target is None:
            raise UnlearnError("eval.select.rule first_at_or_below needs a target (eval.select.target, e.g. the"
                               " retain model's forget_prob)")
        if self.every < 1:
            raise UnlearnError(f"eval.select.every must be a positive number of steps, got {self.every}")

    def _allowed(self, metrics: dict[str, float]) -> bool:
        base = self.start.get(self.constraint_metric)
        if self.min_retain_ratio is None or base is None:
            return True
        return (metrics.get(self.constraint_metric) or 0.0) >= self.min_retain_ratio * base

    def _better(self, value: float) -> bool:
        if self.selected_step is None:
            return True
        best = next(h[self.metric] for h in self.history if h["step"] == self.selected_step)
        return value > best if self.mode == "max" else value < best

    def __call__(self, step: int, record: dict) -> None:
        if step % self.every:
            return
        was_training = self.model.training
        self.model.eval()
        try:
            metrics = self.score(self.model)
        finally:
            self.model.train(was_training)
        if self.metric not in metrics:
            raise UnlearnError(f"eval.select.metric '{self.metric}' is not measured here; measured: {', '.join(metrics)}")
        self.history.append({"step": step, **metrics})
        value = metrics[self.metric]
        if self.rule == "first_at_or_below":
            take = self.selected_step is None and value <= self.target
        else:
            take = self._allowed(metrics) and self._better(value)
        if take:
            self.selected_step = step
            self._kept = {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters() if p.requires_grad}

    def restore(self, last_step: int) -> dict:
        """Load the selected weights into the model; returns what the report records."""
        if self._kept is not None and self.selected_step != last_step:
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in self._kept.items():
                    params[name].copy_(value.to(params[name].device))
        chosen = self.selected_step if self._kept is not None else last_step
        return {"rule": self.rule, "metric": self.metric, "mode": self.mode, "every": self.every,
                "min_retain_ratio": self.min_retain_ratio, "constraint_metric": self.constraint_metric,
                "target": self.target,
                "selected_step": chosen, "fallback_to_last": self._kept is None, "start": self.start,
                "history": self.history}
