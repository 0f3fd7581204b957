"""What the decoder layers say at the supervised positions, read during a teacher-forced pass (no extra forward).

A `Readout` rides on a `passes.score_examples` / `passes.token_statistics` pass: forward hooks on the decoder
blocks (`model.hooks.observe_outputs`) take each block's output h_ℓ (B, T, d) at the supervised positions only
— the position t−1 that predicts each answer token y_t, as in `passes` — and, per example, keep

* the **logit lens**: Σ_t log softmax(U(h_ℓ,t−1))[y_t] for every layer ℓ, where U = lm_head ∘ final norm is
  the model's own unembedding (`model.hooks.Unembedding`), so the last layer gives the model's own summed
  log-prob. Computed inside the hook, one layer at a time, in float32 over chunks of at most
  ``passes.CHUNK_ELEMENTS`` logits: the B×T×V logits of a layer are never built, and no layer's B×T×d output
  is kept after its hook returns;
* the **hidden states** h_ℓ (n, d) at the supervised positions of the layers asked for (float32, on the CPU)
  and the targets y (n,), for a linear probe.

The numbers come out in the example's supervised-position order, the order of `TokenStatistics`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from unlearnkit.losses import shifted_labels
from unlearnkit.model.hooks import Unembedding, decoder_layers, observe_outputs


@dataclass(frozen=True)
class LayerReadout:
    """One example's readout. ``lens`` (L,) float64: the summed answer log-prob decoded from each decoder block's
    output (empty when the lens was not asked for); ``hidden``: layer → (n, d) float32 CPU tensor at the n
    supervised positions; ``targets`` (n,) int64: the answer tokens those positions predict."""

    lens: np.ndarray
    hidden: dict[int, torch.Tensor]
    targets: np.ndarray


def lens_logprobs(unembed: Unembedding, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) float32 log-prob of `targets` (N,) under softmax(U(hidden)) for hidden (N, d), in row chunks of at
    most ``passes.CHUNK_ELEMENTS`` logits (1 GiB worth on an accelerator)."""
    from unlearnkit.benchmarks.passes import CHUNK_ELEMENTS, CHUNK_ELEMENTS_GPU

    budget = CHUNK_ELEMENTS if hidden.device.type == "cpu" else max(CHUNK_ELEMENTS, CHUNK_ELEMENTS_GPU)
    step = max(1, budget // max(unembed.vocab_size, 1))
    parts = []
    for start in range(0, hidden.shape[0], step):
        logits = unembed(hidden[start:start + step])  # (n, V) in the model's dtype
        logp = torch.log_softmax(logits.float(), dim=-1)
        wanted = targets[start:start + step].to(logp.device).unsqueeze(-1)
        parts.append(logp.gather(-1, wanted).squeeze(-1))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


class Readout:
    """Collects a `LayerReadout` per example of one pass: give it to `score_examples` / `token_statistics`
    (``readout=``), then read ``rows`` (in the order of the examples given to the pass).

    `lens`: decode every layer through the unembedding; `layers`: the blocks whose hidden states to keep.
    ``seconds`` is the time spent in the readout itself (inside the pass's time)."""

    def __init__(self, n_examples: int, lens: bool, layers: Sequence[int] = ()):
        self.lens, self.layers = lens, tuple(sorted(set(layers)))
        self.rows: list[LayerReadout | None] = [None] * n_examples
        self.seconds = 0.0
        self._batch: dict[str, Any] = {}

    @contextlib.contextmanager
    def capture(self, model: Any, labels: torch.Tensor) -> Iterator[None]:
        """Hooks for the one forward pass of a batch whose labels are `labels` (B, T)."""
        targets, mask = shifted_labels(labels)
        rows, cols = mask.nonzero(as_tuple=True)  # the positions that predict a supervised token, row-major
        wanted = targets[rows, cols]
        n_layers = len(decoder_layers(model))
        unembed = Unembedding(model) if self.lens else None
        lens: list[torch.Tensor | None] = [None] * n_layers
        hidden: dict[int, torch.Tensor] = {}

        def observer(index: int):
            def observe(h: torch.Tensor) -> None:
                started = time.perf_counter()
                picked = h[rows.to(h.device), cols.to(h.device)]  # (N, d): only the supervised positions
                if unembed is not None:
                    lens[index] = lens_logprobs(unembed, picked, wanted).cpu()
                if index in self.layers:
                    hidden[index] = picked.float().cpu()
                self.seconds += time.perf_counter() - started
            return observe

        observed = range(n_layers) if self.lens else self.layers
        with observe_outputs(model, {index: observer(index) for index in observed}):
            yield
        assert not self.lens or all(value is not None for value in lens), "a decoder block did not run"
        self._batch = {"rows": rows.cpu(), "targets": wanted.cpu(), "hidden": hidden,
                       "lens": torch.stack(lens) if self.lens else None}  # lens: (L, N)

    def collect(self, indices: Sequence[int]) -> None:
        """Split the last captured batch (batch row r = example indices[r]) into per-example readouts."""
        batch, self._batch = self._batch, {}
        counts = torch.bincount(batch["rows"], minlength=len(indices)).tolist()
        start = 0
        for row, index in enumerate(indices):
            span = slice(start, start + counts[row])
            start += counts[row]
            lens = batch["lens"][:, span].double().sum(-1).numpy() if batch["lens"] is not None else np.zeros(0)
            self.rows[index] = LayerReadout(lens=lens, hidden={k: v[span] for k, v in batch["hidden"].items()},
                                            targets=batch["targets"][span].numpy().astype(np.int64))
