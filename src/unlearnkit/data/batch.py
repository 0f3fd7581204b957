"""Tokenised examples and padded batches.

An `Example` is one tokenised sequence: `input_ids` and `labels` (−100 where no loss is taken,
i.e. prompt tokens). `collate` pads a list of them on the right for likelihood passes; the
attention mask comes from each example's true length — never from comparing ids with the pad
id, which breaks when pad == EOS and EOS (or a chat turn delimiter) appears inside the text.
`collate_prompts` left-pads prompts for batched generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE_INDEX on prompt tokens

    @property
    def prompt_length(self) -> int:
        """Number of leading tokens without a label (the prompt)."""
        for i, label in enumerate(self.labels):
            if label != IGNORE_INDEX:
                return i
        return len(self.labels)


@dataclass
class TokenBatch:
    """A right-padded batch: (B, T) tensors."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device)
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def row_keys(self) -> list[bytes]:
        """A content key per row (ids and labels of the unpadded sequence), for caches."""
        ids, mask, labels = (t.cpu().numpy() for t in (self.input_ids, self.attention_mask, self.labels))
        keys = []
        for row_ids, row_mask, row_labels in zip(ids, mask.astype(bool), labels):
            keys.append(row_ids[row_mask].tobytes() + b"|" + row_labels[row_mask].tobytes())
        return keys


@dataclass
class UnlearnBatch:
    """What a method's `loss` receives: forget examples, optionally paired retain examples,
    and named extra views of the forget examples (e.g. `idk`: the same questions with an
    "I don't know" answer)."""

    forget: TokenBatch
    retain: TokenBatch | None = None
    extra: dict[str, TokenBatch] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "UnlearnBatch":
        return UnlearnBatch(
            self.forget.to(device),
            self.retain.to(device) if self.retain is not None else None,
            {k: v.to(device) for k, v in self.extra.items()},
        )


def collate(examples: list[Example], pad_id: int) -> TokenBatch:
    """Right-pad examples to the longest one; labels padded with IGNORE_INDEX."""
    if not examples:
        raise ValueError("collate() needs at least one example")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return TokenBatch(ids, mask, labels)


def collate_prompts(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompt ids for generation: returns (input_ids, attention_mask)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids, mask
