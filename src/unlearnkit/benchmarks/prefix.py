"""Shared prompt prefixes in the teacher-forced passes: a question's prompt is run once for all its answers.

TOFU scores each question's answer, paraphrased answer and perturbed answers — up to 7 sequences that start
with the same prompt (WMDP's options share their question the same way). A causal LM's states at the prompt
positions do not depend on what follows them, so the prompt's keys and values can be computed once and reused
for every continuation. For an `Example` whose first supervised label is at index f, its **prefix** is
``input_ids[:k]`` with k = f − 1 ≥ 1 (the last prompt token stays in the continuation, so the logit that
predicts the first answer token comes out of the continuation's forward) and its **continuation** is
``input_ids[k:]`` with ``labels[k:]``; the supervised positions of the continuation are exactly the example's.

`plan` groups examples by their prefix and cuts each group, longest first, into chunks that run their prefix
once: a row joins the current chunk unless its padding there (the chunk's longest continuation minus its own)
would exceed the prefix length — the cost of running the prefix again — or the chunk would not fit one batch.
Chunks of one row go through the plain path, with the examples that share nothing. The chunks, sorted by their
longest continuation (so a batch pads its continuations little), are packed into batches under the plain
path's budget: at most ``batch_size`` continuation rows and rows × (longest prefix + longest continuation)
≤ ``max_tokens`` — a width never below the longest full sequence, so a batch never holds more than a plain
batch of the same rows would (the plain forward keeps a KV cache over its full width too). Two chunks of one
group in one batch run their prefix once. The caller runs all batches widest first. `run`, per batch:

1. one forward over the distinct prefixes (G rows), **left-padded**, with explicit ``position_ids``
   (0 … k−1 on the real tokens) and a fresh ``DynamicCache``; only the last position's logits are kept;
2. ``cache.batch_select_indices(group of each row)``: the cache now has one row per continuation (B rows);
3. one forward over the right-padded continuations with that cache, ``position_ids`` = k_g + 0, 1, …
   (those of the unshared run) and a 2-D attention mask over prefix + continuation (the left padding of
   the prefix and the right padding of the continuation masked).

Left padding keeps every distance in the key index equal to the distance in positions, so causal masks and
sliding windows are the unshared run's, and the masks transformers builds from a 2-D mask are index-based.
The continuation's logits (B, C, V) and labels (B, C) go through the same ``passes._supervised``: the numbers
equal the plain path's up to floating-point noise (attention over extra masked keys).

`can_share` says when this is safe, by explicit checks rather than by catching errors: a Hugging Face causal
LM (peft LoRA wrappers included, not prompt learning) whose forward takes ``position_ids`` and a cache, whose
cache layers are plain or sliding-window KV layers (not chunked attention), attention "eager" or "sdpa"
(flash-attention kernels take the plain path), and no GRUN representation edits (they act at the prompt's
end, `model.edits`). A `Reference` (its own ``logits`` method) and layer readouts (hooks over all positions
of one forward) take the plain path; the caller decides the latter. A forward that leaves the given cache
empty raises rather than scoring without the prompt.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from unlearnkit.data.batch import IGNORE_INDEX, Example, collate_prompts
from unlearnkit.model.edits import has_edits
from unlearnkit.model.hooks import base_causal_lm, cache_keyword

ATTENTION = ("eager", "sdpa")  # implementations whose masks are built index by index from a 2-D mask


@dataclass(frozen=True)
class SharedBatch:
    """One batch of continuations: row r is example ``indices[r]``, continuing prefix ``groups[r]``."""

    indices: list[int]  # into the caller's examples
    groups: list[int]  # per row, its prefix (0 … G−1)
    prefix_lengths: list[int]  # per prefix, its length k
    width: int  # longest prefix + longest continuation: the padded width the token budget counts


def prefix_length(example: Example) -> int:
    """k: the example shares ``input_ids[:k]``; 0 when it cannot (no supervised label, or one at index ≤ 1)."""
    first = example.prompt_length
    return first - 1 if 2 <= first < len(example.labels) else 0


def can_share(model: Any) -> bool:
    """Whether `model`'s forward can continue a shared prefix's KV cache exactly (see the module docstring)."""
    if hasattr(model, "logits") and callable(model.logits):  # a Reference: logits of whole batches only
        return False
    if not isinstance(model, torch.nn.Module) or has_edits(model):
        return False
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):  # virtual tokens in the cache
        return False
    from transformers import PreTrainedModel
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    base = base_causal_lm(model)
    if not isinstance(base, PreTrainedModel):
        return False
    config = base.config
    if getattr(config, "is_encoder_decoder", False) or not getattr(config, "is_causal", True):
        return False
    if getattr(config, "_attn_implementation", None) not in ATTENTION:
        return False
    if "position_ids" not in inspect.signature(base.forward).parameters or cache_keyword(base) is None:
        return False
    text = config.get_text_config(decoder=True)
    if getattr(text, "attention_chunk_size", None) is not None or "chunked_attention" in (
            getattr(text, "layer_types", None) or ()):  # chunks start at absolute positions, not key indices
        return False
    layers = DynamicCache(config=config).layers
    return all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


def plan(examples: Sequence[Example], batch_size: int | None,
         max_tokens: int | None) -> tuple[list[int], list[SharedBatch]]:
    """(indices for the plain path, shared batches): every index of `examples` in exactly one of them."""
    groups: dict[tuple[int, ...], list[int]] = {}
    plain: list[int] = []
    for index, example in enumerate(examples):
        k = prefix_length(example)
        if k >= 1:
            groups.setdefault(tuple(example.input_ids[:k]), []).append(index)
        else:
            plain.append(index)
    chunks: list[tuple[tuple[int, ...], list[int], int]] = []  # (prefix, members longest first, longest length)
    for key, members in groups.items():
        k = len(key)
        members = sorted(members, key=lambda i: -len(examples[i].input_ids))
        start = 0
        while start < len(members):
            width = len(examples[members[start]].input_ids)  # k + its continuation: the chunk's widest row
            cap = len(members) if batch_size is None else batch_size
            if max_tokens is not None:
                cap = min(cap, max(1, max_tokens // width))
            end = start + 1
            while end < min(len(members), start + cap) and width - len(examples[members[end]].input_ids) <= k:
                end += 1  # a row joins unless its padding here would cost more than running the prefix again
            chunk = members[start:end]
            start = end
            if len(chunk) < 2:
                plain.extend(chunk)  # a prefix of its own: nothing to share
            else:
                chunks.append((key, chunk, width))
    # by longest continuation (stable), so that a batch's continuations have similar lengths
    chunks.sort(key=lambda chunk: len(chunk[0]) - chunk[2])

    batches: list[SharedBatch] = []
    rows: list[int] = []
    group_of: list[int] = []
    lengths: list[int] = []
    keys: dict[tuple[int, ...], int] = {}  # the batch's prefixes
    longest_prefix = longest_continuation = 0

    def close() -> None:
        if rows:
            batches.append(SharedBatch(list(rows), list(group_of), list(lengths),
                                       longest_prefix + longest_continuation))

    for key, chunk, width in chunks:
        k, n = len(key), len(rows) + len(chunk)
        prefix, continuation = max(longest_prefix, k), max(longest_continuation, width - k)
        fits = bool(rows) and (batch_size is None or n <= batch_size) and (
            max_tokens is None or n * (prefix + continuation) <= max_tokens)
        if not fits:
            close()
            rows, group_of, lengths, keys = [], [], [], {}
            prefix, continuation = k, width - k
        if key not in keys:  # two chunks of one group in one batch run their prefix once
            keys[key] = len(lengths)
            lengths.append(k)
        group_of += [keys[key]] * len(chunk)
        rows += chunk
        longest_prefix, longest_continuation = prefix, continuation
    close()
    return plain, batches


def run(model: Any, rows: Sequence[Example], batch: SharedBatch, pad_id: int,
        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C, V), labels (B, C)) of the continuations of `rows` (the examples of ``batch.indices``):
    the prefixes' forward, its cache expanded to one row per continuation, the continuations' forward."""
    from transformers.cache_utils import DynamicCache

    base = base_causal_lm(model)
    keyword = cache_keyword(base)
    lengths = torch.tensor(batch.prefix_lengths, dtype=torch.long)
    width = int(lengths.max())
    first_row: dict[int, int] = {}
    for row, g in enumerate(batch.groups):
        first_row.setdefault(g, row)
    prefix_ids, prefix_mask = collate_prompts([list(rows[first_row[g]].input_ids[:k])  # left-padded
                                              for g, k in enumerate(batch.prefix_lengths)], pad_id)
    prefix_ids, prefix_mask = prefix_ids.to(device), prefix_mask.to(device)
    cache = DynamicCache(config=base.config)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
    model(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=(prefix_mask.cumsum(-1) - 1).clamp(min=0),
          use_cache=True, **{keyword: cache}, **extra)
    if cache.get_seq_length() != width:  # the forward ignored the cache: continuing it would be wrong
        raise RuntimeError(f"{type(base).__name__} did not fill the KV cache it was given ({cache.get_seq_length()}"
                           f" of {width} prefix tokens); set passes.SHARE_PREFIXES = False")

    group = torch.tensor(batch.groups, dtype=torch.long)
    starts = [batch.prefix_lengths[g] for g in batch.groups]
    span = max(len(e.input_ids) - k for e, k in zip(rows, starts))
    ids = torch.full((len(rows), span), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), span), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), span), dtype=torch.long)
    for row, (example, k) in enumerate(zip(rows, starts)):
        n = len(example.input_ids) - k
        ids[row, :n] = torch.tensor(example.input_ids[k:])
        labels[row, :n] = torch.tensor(example.labels[k:])
        mask[row, :n] = 1
    group = group.to(device)
    cache.batch_select_indices(group)  # one cache row per continuation
    positions = lengths.to(device)[group].unsqueeze(1) + torch.arange(span, device=device).unsqueeze(0)
    logits = model(input_ids=ids.to(device), attention_mask=torch.cat([prefix_mask[group], mask.to(device)], 1),
                   position_ids=positions, use_cache=True, **{keyword: cache}).logits
    return logits, labels.to(device)
