"""The two model passes every benchmark is built from: teacher-forced scoring and generation.

``score_examples`` returns, per `Example`, the summed log-probability of its supervised tokens
log π(y|x) = Σ_t log π(y_t | x, y_<t) (float32 log-softmax, via ``unlearnkit.losses``) and the number of
supervised tokens |y| = #(labels ≠ −100), which is what OpenUnlearning divides by (``num_token_gt``;
the two counts agree whenever position 0 — the BOS — carries no label, as in every prompt format).

``generate`` decodes as a `Decoding` says: greedy by default (``do_sample=False``, one beam, KV cache),
or sampling with temperature / top-p / top-k under a seed, or the model's own generation config; the
settings are recorded next to the results (specs pitfall 7). ``generate_greedy`` is ``generate`` with
greedy decoding. Both decode from left-padded prompts, keep only the new tokens, cut each sample at its
first EOS (HF stops sequences of a batch independently and pads the finished ones), decode with
``skip_special_tokens=True``, then cut at the optional stop strings and strip — OpenUnlearning's
``eval_text_similarity``. EOS ids are the tokenizer's EOS plus the model's own
``generation_config.eos_token_id`` (e.g. Llama-3-Instruct's ``<|eot_id|>`` and ``<|end_of_text|>``),
which is what ``model.generate`` stops on in OpenUnlearning.

Speed: both passes sort inputs by length (longest first, so an out-of-memory shows on the first batch)
to cut padding, then restore the caller's order. Results do not depend on batch size or order beyond
floating-point noise: right padding never reaches real positions under a causal mask, left padding is
masked and positions come from the attention mask. (Sampled generations are reproducible for the same
seed, prompts, batch size and device, since the random draws follow the batches.)
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from unlearnkit.data.batch import IGNORE_INDEX, Example, collate, collate_prompts
from unlearnkit.model.edits import edit_positions
from unlearnkit.model.hooks import prompt_end_positions
from unlearnkit.losses import logits_of, sequence_logprob_from_logits
from unlearnkit.metrics.text import cut_at_stop_strings


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


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by decreasing length (stable), chunked into batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _progress(batches: list, desc: str, enabled: bool):
    if not enabled:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=desc, total=len(batches))


def score_examples(
    model: Any, examples: list[Example], pad_id: int, batch_size: int = 32, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(summed_logprob (N,) float64, n_tokens (N,) int64) for `examples`, in their order.

    Teacher-forced under ``torch.no_grad()`` in eval mode; right-padded batches of similar length.
    ``model`` may be a causal LM or anything ``losses.logits_of`` accepts (e.g. a Reference).
    """
    n_tokens = np.array([sum(label != IGNORE_INDEX for label in e.labels) for e in examples], dtype=np.int64)
    summed = np.zeros(len(examples), dtype=np.float64)
    if not examples:
        return summed, n_tokens
    device = model_device(model)
    batches = _length_batches([len(e.input_ids) for e in examples], batch_size)
    with torch.no_grad(), _eval_mode(model):
        for indices in _progress(batches, "scoring", progress):
            batch = collate([examples[i] for i in indices], pad_id).to(device)
            with edit_positions(model, prompt_end_positions(batch.labels)):  # GRUN edits act at the prompt's end
                values = sequence_logprob_from_logits(logits_of(model, batch), batch.labels)
            summed[indices] = values.double().cpu().numpy()
    return summed, n_tokens


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS id followed by any other EOS id in the model's generation config."""
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates += model_eos if isinstance(model_eos, (list, tuple)) else [model_eos]
    for value in candidates:
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    return ids


@contextmanager
def _clean_generation_config(model: Any, config: Any) -> Iterator[None]:
    """Swap in `config` as the model's default generation config for the duration of the pass.

    ``generate`` fills every unset field from ``model.generation_config``, so a checkpoint shipping
    ``do_sample=True, temperature=0.6`` (or a repetition penalty) would leak into "greedy" decoding.
    Wrappers (PEFT) keep their own attribute and the base model's; both are swapped and restored.
    """
    owners = [model]
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base) and get_base() is not model:
        owners.append(get_base())
    saved = [(owner, owner.generation_config) for owner in owners if hasattr(owner, "generation_config")]
    for owner, _ in saved:
        owner.generation_config = copy.deepcopy(config)
    try:
        yield
    finally:
        for owner, original in saved:
            owner.generation_config = original


@dataclass(frozen=True)
class Decoding:
    """How to decode a generation pass; recorded next to every number it produces.

    Greedy by default. ``do_sample=True`` samples with ``temperature``, nucleus ``top_p`` and ``top_k``
    (0 = off), the global torch RNG seeded with ``seed`` for the pass (and restored afterwards), so a
    sampled pass is reproducible for the same prompts, ``batch_size`` and device. ``from_model=True``
    takes do_sample / temperature / top_p / top_k from the model's own ``generation_config`` instead —
    what the USA harvest did by passing no sampling arguments (Llama-3-Instruct samples at T = 0.6,
    top-p = 0.9; specs pitfall 7) — and ``resolved(model)`` returns the settings that will actually apply.
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    max_new_tokens: int = 200
    batch_size: int = 32
    from_model: bool = False

    def __post_init__(self) -> None:
        from unlearnkit.errors import UnlearnError

        checks = [(self.temperature > 0, f"temperature={self.temperature}: must be > 0"),
                  (0 < self.top_p <= 1, f"top_p={self.top_p}: must be in (0, 1]"),
                  (self.top_k >= 0, f"top_k={self.top_k}: must be >= 0 (0 turns it off)"),
                  (self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens}: must be >= 1"),
                  (self.batch_size >= 1, f"batch_size={self.batch_size}: must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise UnlearnError(f"decoding {message}; fix the decoding settings")

    @classmethod
    def of(cls, value: Decoding | dict | None) -> Decoding:
        """A Decoding from itself, a dict of its fields (unknown keys are an error naming the valid ones), or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        from dataclasses import fields

        from unlearnkit.errors import UnlearnError
        from unlearnkit.registry import did_you_mean

        known = [f.name for f in fields(cls)]
        for key in value:
            if key not in known:
                raise UnlearnError(f"unknown decoding field '{key}';{did_you_mean(key, known)} valid: {', '.join(known)}")
        return cls(**value)

    def resolved(self, model: Any) -> Decoding:
        """These settings with ``from_model`` applied (the model's generation_config filled in)."""
        if not self.from_model:
            return self
        config = getattr(model, "generation_config", None)

        def get(name: str, default: Any) -> Any:
            value = getattr(config, name, None)
            return default if value is None else value

        return replace(self, from_model=False, do_sample=bool(get("do_sample", False)),
                       temperature=float(get("temperature", 1.0)), top_p=float(get("top_p", 1.0)),
                       top_k=int(get("top_k", 0)))

    def to_dict(self) -> dict:
        return asdict(self)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    decoding: Decoding | dict | None = None,
    stop_strings: Sequence[str] = (),
    progress: bool = False,
) -> list[str]:
    """Continuation text of each prompt (token ids, BOS included), in the prompts' order, decoded as
    ``decoding`` says (greedy by default); same batching, EOS handling and cutting as `generate_greedy`."""
    from transformers import GenerationConfig

    decoding = Decoding.of(decoding).resolved(model)
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("generate got an empty prompt; every prompt needs at least one token (e.g. BOS)")
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids[0] if eos_ids else None)
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token first")
    sampling = ({"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p,
                 "top_k": decoding.top_k} if decoding.do_sample else {"do_sample": False})
    config = GenerationConfig(
        **sampling, num_beams=1, max_new_tokens=decoding.max_new_tokens, use_cache=True,
        eos_token_id=eos_ids or None, pad_token_id=pad_id,
    )
    texts: list[str] = [""] * len(prompts)
    if not prompts:
        return texts
    device = model_device(model)
    stop_ids = set(eos_ids)
    batches = _length_batches([len(p) for p in prompts], decoding.batch_size)
    with torch.no_grad(), _eval_mode(model), _clean_generation_config(model, config), _seeded(decoding, device):
        for indices in _progress(batches, "generating", progress):
            input_ids, attention_mask = collate_prompts([prompts[i] for i in indices], pad_id)
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
            )
            new_tokens = output[:, input_ids.shape[1]:].tolist()  # (B, ≤ max_new_tokens)
            for row, index in enumerate(indices):
                tokens = new_tokens[row]
                end = next((k for k, token in enumerate(tokens) if token in stop_ids), len(tokens))
                text = tokenizer.decode(tokens[:end], skip_special_tokens=True)
                texts[index] = cut_at_stop_strings(text, stop_strings)
    return texts


@contextmanager
def _seeded(decoding: Decoding, device: torch.device) -> Iterator[None]:
    """For a sampled pass: seed the global torch RNG (what ``generate`` draws from) and restore the
    caller's RNG state afterwards; greedy passes leave the RNG alone."""
    if not decoding.do_sample:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(decoding.seed)
        yield


def generate_greedy(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int = 200,
    batch_size: int = 32,
    stop_strings: Sequence[str] = (),
    progress: bool = False,
) -> list[str]:
    """Greedy continuation text of each prompt (token ids, BOS included), in the prompts' order."""
    return generate(model, tokenizer, prompts, Decoding(max_new_tokens=max_new_tokens, batch_size=batch_size),
                    stop_strings=stop_strings, progress=progress)


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


def token_statistics(
    model: Any, examples: list[Example], pad_id: int, batch_size: int = 32, progress: bool = False
) -> list[TokenStatistics]:
    """Per-token log-probs, the moments (μ_t, σ_t²) of the log-prob under the model's own distribution
    (Min-K%++), and argmax predictions (extraction strength, exact memorisation) for `examples`, in
    their order — one teacher-forced pass, batched and padded exactly like `score_examples`, so
    ``logprobs.sum()`` equals its summed log-probability.
    """
    from unlearnkit.losses import shifted_labels

    results: list[TokenStatistics | None] = [None] * len(examples)
    if not examples:
        return []
    device = model_device(model)
    batches = _length_batches([len(e.input_ids) for e in examples], batch_size)
    with torch.no_grad(), _eval_mode(model):
        for indices in _progress(batches, "token statistics", progress):
            batch = collate([examples[i] for i in indices], pad_id).to(device)
            with edit_positions(model, prompt_end_positions(batch.labels)):
                logits = logits_of(model, batch)
            targets, mask = shifted_labels(batch.labels)  # (B, T-1) each
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
            probs = logp.exp()
            p_logp = torch.where(probs > 0, probs * logp, torch.zeros_like(logp))  # 0·log 0 = 0
            mean = p_logp.sum(-1)
            # Σ_v p_v (log p_v − μ_t)², equal to Σ_v p_v (log p_v)² − μ_t² but without its float32
            # cancellation (μ_t² ≈ 30 against a variance of 0.01 on a near-uniform model)
            centred = torch.where(probs > 0, logp - mean.unsqueeze(-1), torch.zeros_like(logp))
            variance = (probs * centred.square()).sum(-1)
            picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            predictions = logp.argmax(-1)
            for row, index in enumerate(indices):
                keep = mask[row]
                results[index] = TokenStatistics(
                    logprobs=picked[row][keep].double().cpu().numpy(),
                    mean=mean[row][keep].double().cpu().numpy(),
                    variance=variance[row][keep].double().cpu().numpy(),
                    predictions=predictions[row][keep].cpu().numpy().astype(np.int64),
                    targets=targets[row][keep].cpu().numpy().astype(np.int64),
                )
    return results  # type: ignore[return-value]
