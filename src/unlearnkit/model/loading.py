"""Load any causal LM (hub id or local dir), wrap it with LoRA, build tiny models in code.

`load_model("meta-llama/Llama-3.2-1B-Instruct")` goes through `AutoModelForCausalLM.from_pretrained`
(safetensors only, `trust_remote_code` only when asked). A local directory holding edits.json
(a GRUN result) gets its representation edits attached (`unlearnkit.model.edits`). The tokenizer gets a pad token distinct
from EOS when it has none (a new `<pad>` token is *not* added, so the embedding size is kept: pad
reuses EOS's id, which is safe because attention masks come from lengths, never from ids).

A folder that cannot be loaded (no config.json, config.json not JSON, no weights, a truncated or corrupt
safetensors file, weights that do not fit config.json, no tokenizer files) is one `UnlearnError` naming the
folder or file and the fix; a local folder's files are checked before transformers reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import base_causal_lm

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraSpec:
    """peft LoRA settings (the recipe's `model.lora:`). Defaults: LLaMA-Factory's rank 8, α = 2·r."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")


def resolve_device(device: str = "auto") -> str:
    """The device to place a model on: "auto" is "cuda" when a GPU is visible, else "cpu"; "cuda" and
    "cuda:N" are refused, naming the fix, when no such GPU is visible."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= visible:
            raise UnlearnError(f"model.device={device}, but {visible or 'no'} CUDA device{'s are' if visible != 1 else ' is'}"
                               " visible; use model.device=auto (the GPU when there is one) or cpu")
    return device


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UnlearnError(f"unknown dtype '{name}'; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


def _load_errors() -> tuple[type[BaseException], ...]:
    """What transformers, safetensors and huggingface_hub raise for a folder or hub id they cannot load: bad or
    missing files (OSError, ValueError incl. JSON errors), configs with wrong fields (TypeError, KeyError, the hub's
    strict-dataclass errors, AssertionError), weights that do not fit the config or memory (RuntimeError), and a
    file that needs a package the environment lacks (ImportError: transformers 4.x asks for protobuf when it
    cannot parse a tokenizer.json)."""
    from safetensors import SafetensorError

    errors: list[type[BaseException]] = [OSError, ValueError, TypeError, KeyError, RuntimeError, AssertionError,
                                         ImportError, SafetensorError]
    try:
        from huggingface_hub.errors import StrictDataclassError

        errors.append(StrictDataclassError)
    except ImportError:  # older huggingface_hub
        pass
    return tuple(errors)


def _is_load_error(err: BaseException) -> bool:
    # the `tokenizers` library raises plain Exception for a malformed tokenizer.json
    return isinstance(err, _load_errors()) or type(err) is Exception


def _check_folder(name: str, what: str) -> None:
    """A clear error for a local path that is missing, a file, or a folder without the files `what` needs."""
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or Path(name).is_absolute()
    if not path.exists():
        if looks_local:
            raise UnlearnError(f"{what} folder {path} does not exist; give a folder written by save_pretrained"
                               " or a hub id")
        return  # a hub id
    if not path.is_dir():
        raise UnlearnError(f"{path} is a file; give the {what}'s folder (written by save_pretrained) or a hub id")
    if what == "tokenizer":
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise UnlearnError(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); save the"
                               " tokenizer into that folder, or set model.tokenizer to a folder or hub id that has one")
        return
    config = path / "config.json"
    if not config.is_file():
        raise UnlearnError(f"{path} has no config.json; give a folder written by save_pretrained (config.json,"
                           " model.safetensors, tokenizer files)")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnlearnError(f"{config} is not valid JSON ({err}); save the model again or restore the file") from None
    if not isinstance(parsed, dict):
        raise UnlearnError(f"{config} must be a JSON object (the model's settings); save the model again")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (f"; it holds {pickled[0]}, which unlearnkit does not load (pickle): convert it with"
                " save_pretrained(..., safe_serialization=True)" if pickled else "")
        raise UnlearnError(f"{path} holds no model weights (model.safetensors){hint}")
    from safetensors import SafetensorError, safe_open

    for file in weights:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UnlearnError(f"{file} is truncated or corrupt ({first}); save the model again or download it"
                               " again") from None


def load_tokenizer(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    _check_folder(name_or_path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as err:
        if not _is_load_error(err):
            raise
        raise UnlearnError(load_hint(name_or_path, "tokenizer", err)) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, *, dtype: str = "float32", revision: str | None = None,
               trust_remote_code: bool = False, attn_implementation: str | None = None,
               device: str = "auto") -> nn.Module:
    """The causal LM at `name_or_path` (local folder or hub id), in `dtype`, on `device` (`resolve_device`).

    On an accelerator the weights are loaded straight onto it (``device_map``), never staged in host memory
    as a whole; GRUN edits saved beside the weights are attached on the same device."""
    from transformers import AutoModelForCausalLM

    placed = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), "revision": revision,
                              "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if placed != "cpu":
        kwargs["device_map"] = {"": placed}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    _check_folder(name_or_path, "model")
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except _load_errors() as err:
        raise UnlearnError(load_hint(name_or_path, "model", err)) from None
    if Path(name_or_path).is_dir():
        from unlearnkit.model.edits import EDITS_CONFIG, EDITS_FILE, load_edits

        try:
            load_edits(model, name_or_path)  # a GRUN model: its gated edits, saved beside the weights
        except (*_load_errors(), AttributeError, IndexError) as err:  # a damaged or foreign edit file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UnlearnError(f"{name_or_path}: the GRUN edits ({EDITS_CONFIG}, {EDITS_FILE}) cannot be loaded"
                               f" ({type(err).__name__}: {first[:200]}); save the model again, or remove both files"
                               " to load the model without its edits") from None
    return model


def load_hint(name: str, what: str, err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    if "ignore_mismatched_sizes" in text or "size mismatch" in text:
        text = "its weights do not match the shapes in config.json"
    first = (text[:300] + ("..." if len(text) > 300 else "")) or type(err).__name__
    if Path(name).exists():
        return (f"could not load the {what} from {name}: {first}; check that the folder was written by"
                " save_pretrained (config.json, model.safetensors, tokenizer files)")
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


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward (less activation memory, ~30 % more compute)."""
    lm = base_causal_lm(model)
    if not getattr(lm, "supports_gradient_checkpointing", False):
        raise UnlearnError(f"train.gradient_checkpointing: {type(lm).__name__} does not support it; set it to false")
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
