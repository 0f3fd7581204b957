"""Forget/retain pairing and the deterministic batch stream the trainer consumes.

Each epoch the forget set is shuffled with a generator seeded by (seed, epoch), and the retain
set by (seed, epoch, 1). The k-th forget example of the epoch's *global* order is paired with
the k-th retain example of the retain order (cycled). Data-parallel rank r takes global batch
positions r, r + W, ... — so ranks see different forget examples *and different retain
examples*. (OpenUnlearning drew retain indices from the global torch RNG, which is identical on
every rank, so all GPUs trained on the same retain samples.)

The stream is a pure function of (seed, epoch, rank, world_size): resuming at step s replays it
and skips s·grad_accum micro-batches.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from unlearnkit.data.batch import IGNORE_INDEX, Example, UnlearnBatch, collate
from unlearnkit.errors import UnlearnError


@dataclass
class UnlearnData:
    """Tokenised training data: forget examples, optional retain examples, and extra views
    aligned row-for-row with `forget` (e.g. `idk`: the same question, an IDK answer)."""

    forget: list[Example]
    retain: list[Example] | None = None
    extra: dict[str, list[Example]] = field(default_factory=dict)
    pad_id: int = 0
    tokenizer: Any = field(default=None, repr=False, compare=False)  # the run's, for methods that tokenise text (ELM)

    def __post_init__(self) -> None:
        if not self.forget:
            raise UnlearnError("the forget set is empty; point data.forget_split at a split with rows")
        for name, view in self.extra.items():
            if len(view) != len(self.forget):
                raise ValueError(f"extra view '{name}' has {len(view)} rows, forget has {len(self.forget)}")
        if self.retain is not None and not self.retain:
            raise UnlearnError("the retain set is empty; give a retain split with rows or use a method without retain")
        for name, examples in (("forget", self.forget), ("retain", self.retain or [])):
            empty = next((i for i, e in enumerate(examples) if all(t == IGNORE_INDEX for t in e.labels)), None)
            if empty is not None:  # nothing to train on: its loss would be 0/0
                raise UnlearnError(f"{name} example {empty + 1} keeps no answer token after truncation to"
                                   f" data.max_length ({len(examples[empty].input_ids)} tokens kept); raise"
                                   " data.max_length or shorten the prompt")


def _permutation(n: int, *seed_parts: int) -> list[int]:
    gen = torch.Generator().manual_seed(hash_seed(*seed_parts))
    return torch.randperm(n, generator=gen).tolist()


def hash_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (stable across processes and Python versions)."""
    value = 0x9E3779B97F4A7C15
    for p in parts:
        value = (value * 6364136223846793005 + int(p) + 1442695040888963407) % (1 << 63)
    return value


def batches_per_epoch(n_forget: int, batch_size: int, world_size: int = 1) -> int:
    return max(1, math.ceil(n_forget / (batch_size * world_size)))


def epoch_batches(data: UnlearnData, batch_size: int, epoch: int, seed: int,
                  rank: int = 0, world_size: int = 1, use_retain: bool = True) -> Iterator[UnlearnBatch]:
    """One epoch of batches for `rank`. Short final batches wrap around to the epoch start so
    every rank takes the same number of steps."""
    n = len(data.forget)
    order = _permutation(n, seed, epoch)
    retain_order = _permutation(len(data.retain), seed, epoch, 1) if (data.retain and use_retain) else None
    global_size = batch_size * world_size
    for b in range(batches_per_epoch(n, batch_size, world_size)):
        positions = [b * global_size + rank * batch_size + i for i in range(batch_size)]
        rows = [order[p % n] for p in positions]
        forget = collate([data.forget[i] for i in rows], data.pad_id)
        retain = None
        if retain_order is not None:
            retain = collate([data.retain[retain_order[p % len(retain_order)]] for p in positions], data.pad_id)
        extra = {k: collate([v[i] for i in rows], data.pad_id) for k, v in data.extra.items()}
        yield UnlearnBatch(forget, retain, extra)


def batch_stream(data: UnlearnData, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, use_retain: bool = True) -> Iterator[UnlearnBatch]:
    """Endless stream of epochs."""
    epoch = 0
    while True:
        yield from epoch_batches(data, batch_size, epoch, seed, rank, world_size, use_retain)
        epoch += 1


def encode_qa_rows(rows: Sequence[dict], tokenizer: Any, fmt: Any, split: str, needed_by: str) -> list[Example]:
    """`rows` as teacher-forced QA sequences (prompt masked), after checking each has a question and an answer:
    one line naming the row, the split and what needs them (`needed_by`) otherwise."""
    if not rows:
        raise UnlearnError(f"{needed_by} need at least one {split} row; the {split} set is empty")
    for index, row in enumerate(rows):
        missing = [key for key in ("question", "answer") if key not in row]
        if missing:
            raise UnlearnError(f"{split} row {index}: missing {', '.join(missing)} (row has {', '.join(sorted(row))});"
                               f" {needed_by} need QA rows with 'question' and 'answer'")
    return [fmt.encode(tokenizer, row["question"], row["answer"]) for row in rows]


def encode_rows(rows: Sequence[dict], tokenizer: Any, fmt: Any, answer_key: str = "answer",
                question_key: str = "question", max_length: int | None = None) -> list[Example]:
    return [fmt.encode(tokenizer, r[question_key], r[answer_key], max_length=max_length) for r in rows]


def idk_view(rows: Sequence[dict], tokenizer: Any, fmt: Any, idk_answers: Sequence[str], seed: int,
             max_length: int | None = None) -> list[Example]:
    """Each forget question with an "I don't know" answer chosen once per row (seeded), so the
    data is fixed and reference log-probs can be cached."""
    if not idk_answers:
        raise UnlearnError("the IDK answer pool is empty; give data.idk_file with one answer per line")
    rng = random.Random(seed)
    return [fmt.encode(tokenizer, r["question"], rng.choice(list(idk_answers)), max_length=max_length)
            for r in rows]
