"""Teacher-forced passes: every benchmark's likelihoods come from here (generation is in `generation`).

``score_examples`` returns, per `Example`, the summed log-probability of its supervised tokens
log π(y|x) = Σ_t log π(y_t | x, y_<t) and the number of supervised tokens |y| = #(labels ≠ −100), which is
what OpenUnlearning divides by (``num_token_gt``; the two counts agree whenever position 0 — the BOS —
carries no label, as in every prompt format). ``token_statistics`` returns, per example and supervised
position, the log-prob, the moments (μ_t, σ_t²) of the log-prob under the model's own next-token
distribution (Min-K%++) and the argmax prediction (extraction strength, exact memorisation).
Per-sample gradient norms (the GradNorm MIA) are in `gradnorm`.

How, at any size:

* **Batches under a token budget.** Sequences are sorted by length (longest first, so an out-of-memory
  shows on the first batch) and packed while rows × longest ≤ ``max_tokens`` (and rows ≤ ``batch_size``
  when given); the caller's order is restored afterwards.
* **Only supervised positions, float32 in chunks.** The logits of the supervised positions are gathered
  (answer tokens, not prompts or padding) and the float32 log-softmax runs over chunks of at most
  ``CHUNK_ELEMENTS`` values (128 MiB; 1 GiB on an accelerator, where small chunks cost kernel launches),
  so neither the full B×T×V tensor nor its float32 copy is ever made
  beyond the model's own output (at vocab 128k a float32 copy of a 64×128 batch would be 4 GiB).
* **Each prompt prefix once.** Examples that repeat a prompt (TOFU's answer, paraphrase and perturbed answers
  of one question) run it once per batch: one forward over the distinct prefixes, their KV cache expanded to
  one row per continuation, one forward over the continuations with their own positions (`prefix`; the
  same numbers up to float noise, the same token budget). Off with ``SHARE_PREFIXES = False``, and never
  with a layer readout, GRUN edits, or a model that is not a Hugging Face causal LM.
* **Layer readouts in the same forward.** Given a `readout.Readout`, both passes also read the decoder
  layers at the supervised positions (the logit lens, hidden states for a probe) through hooks on the
  same forward pass: white-box metrics add no pass of their own.

Results do not depend on batch size or order beyond floating-point noise: right padding never reaches
real positions under a causal mask.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from unlearnkit.benchmarks import prefix
from unlearnkit.data.batch import IGNORE_INDEX, Example, collate
from unlearnkit.losses import logits_of, shifted_labels
from unlearnkit.model.edits import edit_positions
from unlearnkit.model.hooks import prompt_end_positions

CHUNK_ELEMENTS = 1 << 25  # float32 values per log-softmax chunk on a CPU (128 MiB)
CHUNK_ELEMENTS_GPU = 1 << 28  # on an accelerator (1 GiB): fewer, larger kernels
SHARE_PREFIXES = True  # run a prompt prefix shared by several examples once per batch (`prefix`)


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Dropout off for the pass; the caller's train/eval mode is restored afterwards."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


def _check_budget(batch_size: int | None, max_tokens: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens}")


def _length_batches(lengths: Sequence[int], batch_size: int | None, max_tokens: int | None = None) -> list[list[int]]:
    """Indices sorted by decreasing length (stable), packed into batches of at most `batch_size` rows and
    at most `max_tokens` padded tokens (rows × longest); a sequence longer than the budget gets its own batch."""
    _check_budget(batch_size, max_tokens)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else None
        fits = current is not None and (batch_size is None or len(current) < batch_size) and (
            max_tokens is None or (len(current) + 1) * lengths[current[0]] <= max_tokens)
        if fits:
            current.append(index)
        else:
            batches.append([index])
    return batches


def _progress(batches: list, desc: str, enabled: bool):
    if not enabled or int(os.environ.get("RANK", "0")) != 0:  # a sharded evaluation shows rank 0's bar only
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=desc, total=len(batches))


@dataclass(frozen=True)
class TokenStatistics:
    """Teacher-forced per-token numbers of one `Example`, over its supervised positions in order.

    The last entry is the final labelled token (the EOS in every prompt format); token-level privacy
    metrics drop it, as OpenUnlearning does (see ``unlearnkit.metrics.mia``). Arrays have shape (n,).
    """

    logprobs: np.ndarray  # log π(y_t | ·), float64
    mean: np.ndarray  # μ_t = Σ_v p_v log p_v under the model's next-token distribution, float64
    variance: np.ndarray  # σ_t² = Σ_v p_v (log p_v)² − μ_t² (computed centred; unclamped), float64
    predictions: np.ndarray  # argmax_v π(v | ·), int64
    targets: np.ndarray  # y_t, int64


def _supervised(logits: torch.Tensor, labels: torch.Tensor, stats: bool) -> dict[str, torch.Tensor]:
    """Per supervised position (row-major order), the float32 log-prob of the target and, with `stats`, the
    moments and argmax of the next-token distribution; `rows` says which batch row each position is in."""
    targets, mask = shifted_labels(labels)  # (B, T-1) each
    rows, cols = mask.nonzero(as_tuple=True)
    picked = logits[:, :-1][rows, cols]  # (N, V) in the model's dtype: only the supervised positions
    wanted = targets[rows, cols]
    budget = CHUNK_ELEMENTS if picked.device.type == "cpu" else max(CHUNK_ELEMENTS, CHUNK_ELEMENTS_GPU)
    step = max(1, budget // max(picked.shape[-1], 1))
    parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "mean": [], "variance": [], "predictions": []}
    for start in range(0, picked.shape[0], step):
        logp = torch.log_softmax(picked[start:start + step].float(), dim=-1)  # (n, V) float32
        parts["logprobs"].append(logp.gather(-1, wanted[start:start + step].unsqueeze(-1)).squeeze(-1))
        if stats:
            probs = logp.exp()
            mean = torch.where(probs > 0, probs * logp, torch.zeros_like(logp)).sum(-1)  # 0·log 0 = 0
            # Σ_v p_v (log p_v − μ_t)², equal to Σ_v p_v (log p_v)² − μ_t² but without its float32
            # cancellation (μ_t² ≈ 30 against a variance of 0.01 on a near-uniform model)
            centred = torch.where(probs > 0, logp - mean.unsqueeze(-1), torch.zeros_like(logp))
            parts["mean"].append(mean)
            parts["variance"].append((probs * centred.square()).sum(-1))
            parts["predictions"].append(logp.argmax(-1))
    empty = logits.new_zeros(0, dtype=torch.float32)
    out = {key: torch.cat(values) if values else empty for key, values in parts.items()}
    out.update(rows=rows, targets=wanted)
    return out


def _teacher_forced(model: Any, examples: list[Example], pad_id: int, batch_size: int | None, max_tokens: int | None,
                    stats: bool, progress: bool, desc: str, readout: Any = None):
    """Yield (indices into `examples`, `_supervised` output) per batch; a `readout.Readout` reads the decoder
    layers during the same forward and gets each batch's examples. Prompt prefixes repeated across examples
    run once per batch (`prefix`) when `SHARE_PREFIXES` and `prefix.can_share(model)`, without a readout."""
    device = model_device(model)
    _check_budget(batch_size, max_tokens)
    plain, shared = list(range(len(examples))), []
    if SHARE_PREFIXES and readout is None and prefix.can_share(model):
        plain, shared = prefix.plan(examples, batch_size, max_tokens)
    batches: list[tuple[int, list[int], prefix.SharedBatch | None]] = [  # (padded width, indices, shared batch)
        (len(examples[plain[b[0]]].input_ids), [plain[j] for j in b], None)
        for b in _length_batches([len(examples[i].input_ids) for i in plain], batch_size, max_tokens)]
    batches += [(b.width, b.indices, b) for b in shared]
    batches.sort(key=lambda b: -b[0])  # longest first, so an out-of-memory shows on the first batch
    with torch.no_grad(), _eval_mode(model):
        for _, indices, shared_batch in _progress(batches, desc, progress):
            if shared_batch is not None:
                logits, labels = prefix.run(model, [examples[i] for i in indices], shared_batch, pad_id, device)
                yield indices, _supervised(logits, labels, stats)
                del logits
                continue
            batch = collate([examples[i] for i in indices], pad_id).to(device)
            with edit_positions(model, prompt_end_positions(batch.labels)), \
                    (readout.capture(model, batch.labels) if readout is not None else nullcontext()):
                logits = logits_of(model, batch)  # GRUN edits act at the prompt's end
            if readout is not None:
                readout.collect(indices)
            yield indices, _supervised(logits, batch.labels, stats)
            del logits


def score_examples(model: Any, examples: list[Example], pad_id: int, batch_size: int | None = 32,
                   progress: bool = False, max_tokens: int | None = None,
                   readout: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(summed_logprob (N,) float64, n_tokens (N,) int64) for `examples`, in their order.

    Teacher-forced under ``torch.no_grad()`` in eval mode; `model` may be a causal LM or anything
    ``losses.logits_of`` accepts (e.g. a Reference). `readout` (a `readout.Readout` for len(examples)) is
    filled with what the decoder layers say during the same forward passes."""
    n_tokens = np.array([sum(label != IGNORE_INDEX for label in e.labels) for e in examples], dtype=np.int64)
    summed = np.zeros(len(examples), dtype=np.float64)
    for indices, out in _teacher_forced(model, examples, pad_id, batch_size, max_tokens, False, progress, "scoring",
                                        readout):
        totals = torch.zeros(len(indices), dtype=torch.float32, device=out["logprobs"].device)
        totals.index_add_(0, out["rows"], out["logprobs"])
        summed[indices] = totals.double().cpu().numpy()
    return summed, n_tokens


def token_statistics(model: Any, examples: list[Example], pad_id: int, batch_size: int | None = 32,
                     progress: bool = False, max_tokens: int | None = None,
                     readout: Any = None) -> list[TokenStatistics]:
    """Per-token log-probs, the moments (μ_t, σ_t²) of the log-prob under the model's own distribution
    (Min-K%++), and argmax predictions (extraction strength, exact memorisation) for `examples`, in
    their order — batched exactly like `score_examples`, so ``logprobs.sum()`` equals its summed log-prob.
    `readout` as in `score_examples`."""
    results: list[TokenStatistics | None] = [None] * len(examples)
    for indices, out in _teacher_forced(model, examples, pad_id, batch_size, max_tokens, True, progress,
                                        "token statistics", readout):
        counts = torch.bincount(out["rows"], minlength=len(indices)).tolist()
        columns = {key: out[key].cpu() for key in ("logprobs", "mean", "variance", "predictions", "targets")}
        start = 0
        for row, index in enumerate(indices):
            span = slice(start, start + counts[row])
            start += counts[row]
            results[index] = TokenStatistics(
                logprobs=columns["logprobs"][span].double().numpy(), mean=columns["mean"][span].double().numpy(),
                variance=columns["variance"][span].double().numpy(),
                predictions=columns["predictions"][span].numpy().astype(np.int64),
                targets=columns["targets"][span].numpy().astype(np.int64))
    return results  # type: ignore[return-value]
