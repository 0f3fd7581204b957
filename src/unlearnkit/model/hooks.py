"""Hidden-state access and interventions on decoder layers. The only place that knows model families.

Everything acts on the output of decoder block ℓ (`decoder_layers(model)[ℓ]`), which is Hugging
Face's ``hidden_states[ℓ + 1]`` — RMU's convention (specs/methods.md pitfall 24).

* `decoder_layers(model)`: the ModuleList of blocks for Llama/Mistral/Qwen/Gemma/OPT/GPT-2/GPT-NeoX,
  through PEFT wrappers.
* `resolve_layers(spec, n)`: layer indices from absolute ints (negative counts from the end) or
  fractions of depth (floats in [0, 1]: round(f·(n − 1))), so one recipe fits a 2-layer tiny model
  and a 32-layer 8B model.
* `capture_outputs(model, layers)`: the block outputs of one forward pass (with gradients);
  `observe_outputs(model, {layer: fn})` calls fn(h) on them and changes nothing (the logit lens reads
  the supervised positions inside the hook, so no B×T×d tensor per layer is kept).
* `Unembedding(model)`: h ↦ logits as the model maps its last block's output — final norm, output
  embedding (lm_head), Gemma's final-logit soft-capping — for reading any layer through it (logit lens).
* `transform_outputs(model, {layer: fn})`: replace block outputs, e.g. direction ablation or a
  latent perturbation; `ablate_directions` is the refusal-feature ablation h ← h − r̂ r̂ᵀ h and
  `add_to_outputs` adds a perturbation h ← h + δ.
* `mlp_down_projection(model, ℓ)`: block ℓ's MLP output projection (Llama `mlp.down_proj`), which RMU trains.
* `prompt_end_positions(labels)`: per row, the index of the last prompt token (the token before the
  first supervised one) — where GRUN's edit acts.
* `tokens_in_cache(args, kwargs)`: how many tokens a forward's KV cache already holds, read from the
  forward's own inputs whatever a transformers release calls them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from unlearnkit.data.batch import IGNORE_INDEX
from unlearnkit.errors import UnlearnError

# attribute paths from a causal LM to its list of decoder blocks, tried in order
_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "model.language_model.layers")
# attribute paths from a decoder block to its MLP output (down) projection: Llama/Mistral/Qwen/Gemma,
# GPT-2, GPT-NeoX, OPT
_MLP_DOWN_PATHS = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "fc2")
# attribute paths from a causal LM to the norm applied after its last decoder block: Llama/Mistral/Qwen/Gemma,
# OPT, GPT-2, GPT-NeoX, multimodal wrappers' language model
_FINAL_NORM_PATHS = ("model.norm", "model.decoder.final_layer_norm", "transformer.ln_f", "gpt_neox.final_layer_norm",
                     "model.language_model.norm")


def tokens_in_cache(args: Sequence, kwargs: Mapping) -> int:
    """Tokens that precede this forward's inputs in its KV cache (0 when the forward starts a sequence).

    For a forward pre-hook on the base model. `cache_position` gives it directly when the release
    passes one; otherwise the KV cache is found by its type among the arguments, not by keyword:
    transformers 5.24 renamed the model forward's ``past_key_values`` to ``cache``, and a hook that read
    the old keyword saw every decoding step as a new sequence. The cache is read before the forward
    writes to it (this runs in a pre-hook), so its length is the number of earlier tokens.
    """
    from transformers.cache_utils import Cache

    position = kwargs.get("cache_position")
    if isinstance(position, torch.Tensor) and position.numel():
        return int(position.reshape(-1)[0])
    for value in (*kwargs.values(), *args):
        if isinstance(value, Cache):
            return int(value.get_seq_length())
    return 0


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The Hugging Face causal LM under any DistributedDataParallel, DeepSpeed engine and PEFT wrapper."""
    while type(model).__name__ in ("DistributedDataParallel", "DeepSpeedEngine"):  # methods get the prepared model
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def cache_keyword(model: nn.Module) -> str | None:
    """The keyword under which the causal LM's forward takes a KV cache: ``cache`` since transformers 5.24 (the
    old ``past_key_values`` still works there but warns, and goes in 5.40), ``past_key_values`` before; None when
    the forward takes neither."""
    import inspect

    parameters = inspect.signature(base_causal_lm(model).forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def output_cache(output: Any) -> Any:
    """The KV cache a forward with ``use_cache=True`` returned (``output.cache`` or, before 5.24,
    ``output.past_key_values``)."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else output.past_key_values


def _first_path(root: nn.Module, paths: Sequence[str], kind: type) -> nn.Module | None:
    """The first dotted attribute path of `paths` that leads from `root` to a `kind`."""
    for path in paths:
        node = root
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, kind):
            return node
    return None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of `model` (a PEFT model is unwrapped first)."""
    base = base_causal_lm(model)
    layers = _first_path(base, _LAYER_PATHS, nn.ModuleList)
    if layers is not None:
        return layers
    raise UnlearnError(f"cannot find the decoder layers of {type(base).__name__}; supported layouts: "
                       f"{', '.join(_LAYER_PATHS)}")


def hidden_size(model: nn.Module) -> int:
    config = base_causal_lm(model).config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise UnlearnError(f"cannot tell the hidden size of {type(config).__name__}")


def resolve_layers(spec: Sequence[int | float] | int | float, n_layers: int, field: str = "layers") -> list[int]:
    """Absolute layer indices for `spec`.

    ints are indices (negative from the end); floats in [0, 1] are fractions of depth,
    round(f·(n_layers − 1)): (0.65, 0.8, 1.0) on 32 layers gives GRUN's 20, 25, 31.
    """
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise UnlearnError(f"{field} is empty; give layer indices (e.g. [5, 6, 7]) or fractions of depth ([0.5, 1.0])")
    out: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise UnlearnError(f"{field}: {item!r} is not a layer index or a fraction of depth")
        if isinstance(item, float):
            if not 0.0 <= item <= 1.0:
                raise UnlearnError(f"{field}: {item} is a float outside [0, 1]; fractions of depth are in [0, 1],"
                                   " absolute indices are ints")
            index = round(item * (n_layers - 1))
        else:
            index = item + n_layers if item < 0 else item
        if not 0 <= index < n_layers:
            raise UnlearnError(f"{field}: layer {item} does not exist in a model with {n_layers} layers")
        if index not in out:
            out.append(index)
    return out


def _hidden(output):
    """The hidden-state tensor of a block's output (a tensor, or a tuple whose first item it is)."""
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextlib.contextmanager
def capture_outputs(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Collect block outputs (B, T, d) of the forward passes run inside the context (last pass wins)."""
    captured: dict[int, torch.Tensor] = {}

    def make(index: int):
        def hook(_module, _args, output):
            captured[index] = _hidden(output)
        return hook

    with _block_hooks(model, {index: make(index) for index in layers}):
        yield captured


def observe_outputs(model: nn.Module, observers: Mapping[int, Callable[[torch.Tensor], None]]):
    """Context: observers[ℓ](h) is called with block ℓ's output h (B, T, d) in every forward pass; the output is
    left as it is. Registered last, an observer sees the output after any transform already in place."""

    def make(fn: Callable[[torch.Tensor], None]):
        def hook(_module, _args, output):
            fn(_hidden(output))
        return hook

    return _block_hooks(model, {index: make(fn) for index, fn in observers.items()})


class Unembedding:
    """h (…, d), the output of any decoder block, ↦ logits (…, V) exactly as the model maps its last block's
    output: final norm, output embedding (lm_head), and tanh soft-capping where the config has
    ``final_logit_softcapping`` (Gemma 2/3). Applied to the last block it gives the model's own logits.
    PEFT and DDP wrappers are looked through."""

    def __init__(self, model: nn.Module):
        base = base_causal_lm(model)
        self.norm = _first_path(base, _FINAL_NORM_PATHS, nn.Module)
        self.head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        if self.norm is None or self.head is None:
            raise UnlearnError(f"cannot find the final norm and output embedding of {type(base).__name__} (the logit"
                               f" lens reads layers through them); supported layouts: {', '.join(_FINAL_NORM_PATHS)}"
                               " with get_output_embeddings(); or leave forget_logit_lens and forget_linear_probe out"
                               " of eval.metrics")
        config = getattr(base, "config", None)
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.softcap = getattr(text_config, "final_logit_softcapping", None)
        weight = getattr(self.head, "weight", None)
        self.vocab_size = int(getattr(self.head, "out_features", 0) or (weight.shape[0] if weight is not None else 0)
                              or text_config.vocab_size)
        # where each part's weights live (a model split over devices: the block read may sit elsewhere); weights
        # offloaded by accelerate ("meta") are left to its hooks, which move the inputs themselves
        self.devices = [None if w is None or w.device.type == "meta" else w.device
                        for w in (next(iter(m.parameters()), None) for m in (self.norm, self.head))]

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        norm_device, head_device = self.devices
        hidden = self.norm(hidden if norm_device is None else hidden.to(norm_device))
        logits = self.head(hidden if head_device is None else hidden.to(head_device))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


@contextlib.contextmanager
def _block_hooks(model: nn.Module, hooks: Mapping[int, Callable]) -> Iterator[None]:
    """Forward hooks on decoder blocks (by index) for the duration of the context, removed however it ends."""
    blocks = decoder_layers(model)
    handles = [blocks[index].register_forward_hook(hook) for index, hook in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def transform_outputs(model: nn.Module, transforms: Mapping[int, Callable[[torch.Tensor], torch.Tensor]]):
    """Context: block ℓ's output h is replaced by transforms[ℓ](h) in every forward pass."""

    def make(fn: Callable[[torch.Tensor], torch.Tensor]):
        def hook(_module, _args, output):
            return _replace_hidden(output, fn(_hidden(output)))
        return hook

    return _block_hooks(model, {index: make(fn) for index, fn in transforms.items()})


def ablate_directions(model: nn.Module, directions: Mapping[int, torch.Tensor]):
    """Context: h ← h − r̂ r̂ᵀ h at every token of each layer ℓ in `directions` (r̂ unit, shape (d,))."""

    def make(direction: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def ablate(h: torch.Tensor) -> torch.Tensor:
            r = direction.to(device=h.device, dtype=h.dtype)
            return h - (h @ r).unsqueeze(-1) * r
        return ablate

    return transform_outputs(model, {layer: make(d) for layer, d in directions.items()})


def prompt_end_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last prompt token: one before the first supervised label.

    Rows without labels (a bare prompt) use their last position.
    """
    supervised = labels != IGNORE_INDEX
    first = torch.where(supervised.any(-1), supervised.float().argmax(-1), torch.full_like(labels[:, 0], labels.shape[1]))
    return (first - 1).clamp(min=0)


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, d) rows of `hidden` (B, T, d) at `positions` (B,)."""
    index = positions.to(hidden.device).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, index).squeeze(1)


def add_to_outputs(model: nn.Module, offsets: Mapping[int, torch.Tensor]):
    """Context: h ← h + δ_ℓ at each layer ℓ in `offsets` (δ_ℓ (B, T, d), or anything that broadcasts),
    e.g. a latent adversarial perturbation. Gradients flow into δ when it requires them."""

    def make(offset: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda h: h + offset.to(device=h.device, dtype=h.dtype)

    return transform_outputs(model, {layer: make(d) for layer, d in offsets.items()})


def mlp_down_projection(model: nn.Module, layer: int) -> nn.Module:
    """The MLP output projection of decoder block `layer` (a peft LoRA layer when adapters wrap it)."""
    block = decoder_layers(model)[layer]
    module = _first_path(block, _MLP_DOWN_PATHS, nn.Module)
    if module is not None:
        return module
    raise UnlearnError(f"cannot find the MLP down-projection of {type(block).__name__} (layer {layer});"
                       f" supported layouts: {', '.join(_MLP_DOWN_PATHS)}")
