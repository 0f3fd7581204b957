"""Generation: `generate` decodes prompts as a `Decoding` says — greedy by default (``do_sample=False``, one
beam, KV cache), or sampling with temperature / top-p / top-k under a seed, or the model's own generation
config — and the settings are recorded next to the results (specs pitfall 7). `generate_greedy` is
`generate` with greedy decoding.

Both decode from left-padded prompts, keep only the new tokens, cut each sample at its first EOS (HF stops
sequences of a batch independently and pads the finished ones), decode with ``skip_special_tokens=True``,
then cut at the optional stop strings and strip — OpenUnlearning's ``eval_text_similarity``. EOS ids are the
tokenizer's EOS plus the model's own ``generation_config.eos_token_id`` (e.g. Llama-3-Instruct's
``<|eot_id|>`` and ``<|end_of_text|>``), which is what ``model.generate`` stops on in OpenUnlearning.
Prompts are sorted by length (longest first) into batches and the caller's order is restored. (Sampled
generations are reproducible for the same seed, prompts, batch size and device, since the random draws
follow the batches.)
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator, Sequence

import torch

from unlearnkit.benchmarks.passes import _eval_mode, _length_batches, _progress, model_device
from unlearnkit.data.batch import collate_prompts
from unlearnkit.metrics.text import cut_at_stop_strings


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
