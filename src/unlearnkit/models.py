"""Load any causal LM (hub id or local dir), wrap it with LoRA, build tiny models in code.

`load_model("meta-llama/Llama-3.2-1B-Instruct")` goes through `AutoModelForCausalLM.from_pretrained`
(safetensors only, `trust_remote_code` only when asked). A local directory holding edits.json
(a GRUN result) gets its representation edits attached (`unlearnkit.edits`). The tokenizer gets a pad token distinct
from EOS when it has none (a new `<pad>` token is *not* added, so the embedding size is kept: pad
reuses EOS's id, which is safe because attention masks come from lengths, never from ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnkit.errors import UnlearnError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraSpec:
    """peft LoRA settings (the recipe's `model.lora:`). Defaults: LLaMA-Factory's rank 8, α = 2·r."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; anything else is passed to torch as is."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UnlearnError(f"unknown dtype '{name}'; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def load_tokenizer(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UnlearnError(load_hint(name_or_path, "tokenizer", err)) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, *, dtype: str = "float32", revision: str | None = None,
               trust_remote_code: bool = False, attn_implementation: str | None = None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), "revision": revision,
                              "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise UnlearnError(load_hint(name_or_path, "model", err)) from None
    if Path(name_or_path).is_dir():
        from unlearnkit.edits import load_edits

        load_edits(model, name_or_path)  # a GRUN model: its gated edits, saved beside the weights
    return model


def load_hint(name: str, what: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if Path(name).exists():
        return f"could not load the {what} from {name}: {first}"
    return (f"could not load the {what} '{name}': not a local directory, and the Hugging Face hub"
            f" could not provide it ({first}); check the id, log in for gated models, or give a local path")


def wrap_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """Add LoRA adapters (peft). Only adapter weights are trainable afterwards."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=spec.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold adapters into the base weights (a plain model again); identity for non-peft models."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def tiny_llama(vocab_size: int, *, hidden: int = 128, layers: int = 4, heads: int = 4,
               max_positions: int = 256, seed: int = 0, bos_id: int | None = None,
               eos_id: int | None = None, pad_id: int | None = None) -> nn.Module:
    """A small Llama-architecture model, randomly initialised (deterministic under `seed`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=3 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, bos_token_id=bos_id, eos_token_id=eos_id,
                         pad_token_id=pad_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
