"""Gated low-rank representation edits (GRUN's module, Ren et al. 2025, arXiv:2502.17823).

At chosen decoder blocks ℓ, at one position per sequence (the last prompt token), the block
output h ∈ R^d becomes

    h' = h + s · Σ_i g_i(h) · Φ_i(h),     Φ(h) = Rᵀ(W h + b − R h),     g(h) = σ(f(h))

with R ∈ R^{r×d} orthonormal rows (LoReFT), (W, b) a linear map to R^r, and f a linear layer or a
small MLP (the gate). There is no threshold: g is soft at train and test time. With G independently
trained edits (sequential unlearning) s = c·G + b (the seed's 0.6·G + 0.6); with one edit s = 1.
Layers are applied in order inside one forward, so a later gate sees the earlier edits' output.
Other tokens change only through attention to the edited position — the KV cache included.

Where "the last prompt token" is:
* inside `edit_positions(model, positions)`: the given index per row (training and teacher-forced
  scoring, where the prompt is followed by the answer);
* otherwise, on a forward that starts a sequence (empty KV cache): each row's last attended token,
  i.e. the prompt's end in a left-padded generation prefill. Decoding steps after it (KV cache not
  empty) lie past that position, so they are not edited — the edit reaches them through the cache.

The edits live in an `EditStack` registered as the submodule ``unlearn_edits`` of the causal LM
(so `.to(device)` and deep copies carry them), but they are saved apart from the model's weights:
`save_edits` writes ``edits.safetensors`` + ``edits.json`` next to the model, and `load_model`
re-attaches them, so `unlearn eval` scores and generates with the edit active.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from unlearnkit.model.hooks import base_causal_lm, decoder_layers, hidden_size, tokens_in_cache

EDITS_FILE = "edits.safetensors"
EDITS_CONFIG = "edits.json"
ATTRIBUTE = "unlearn_edits"


class GatedLoReFT(nn.Module):
    """One layer's gated LoReFT edit: returns (Φ(h), g(h)) for hidden states h (N, d), in float32."""

    def __init__(self, dim: int, rank: int, gate: str = "linear", gate_hidden: tuple[int, ...] = (256, 64),
                 orthogonal: bool = True):
        super().__init__()
        self.rotation = nn.Linear(dim, rank, bias=False)  # weight = R, (r, d)
        nn.init.orthogonal_(self.rotation.weight)
        if orthogonal:  # R stays orthonormal while training (float32, pitfall 20)
            nn.utils.parametrizations.orthogonal(self.rotation)
        self.source = nn.Linear(dim, rank)  # W h + b
        if gate == "linear":
            self.gate = nn.Linear(dim, 1)
        elif gate == "mlp":
            sizes = (dim, *gate_hidden)
            layers: list[nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            self.gate = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))
        else:
            from unlearnkit.errors import UnlearnError

            raise UnlearnError(f"unknown gate '{gate}'; valid: linear, mlp")

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = h.float()
        rotation = self.rotation.weight.contiguous()  # (r, d); contiguous so saved and live edits compute alike
        phi = (self.source(h) - h @ rotation.T) @ rotation  # (N, d)
        gate = torch.sigmoid(self.gate(h)).squeeze(-1)  # (N,)
        return phi, gate


class Edit(nn.Module):
    """One unlearning request's edit: a GatedLoReFT per layer, and its config."""

    def __init__(self, layers: list[int], dim: int, rank: int, gate: str, gate_hidden: tuple[int, ...],
                 orthogonal: bool = True):
        super().__init__()
        self.layers = list(layers)
        self.config = {"layers": self.layers, "rank": rank, "gate": gate, "gate_hidden": list(gate_hidden)}
        self.per_layer = nn.ModuleDict({str(layer): GatedLoReFT(dim, rank, gate, tuple(gate_hidden), orthogonal)
                                        for layer in layers})
        self.enabled = True


class EditStack(nn.Module):
    """All edits on one model, and the hooks that apply them."""

    def __init__(self, combine_scale: float = 0.6, combine_bias: float = 0.6):
        super().__init__()
        self.edits = nn.ModuleList()
        self.combine_scale = combine_scale
        self.combine_bias = combine_bias
        self.disabled = 0  # >0 inside `edits_disabled`
        self.explicit: torch.Tensor | None = None  # positions given by `edit_positions`
        self.positions: torch.Tensor | None = None  # (B,) absolute index of the edited token
        self.offset = 0  # tokens already in the KV cache for this forward
        self.gates: dict[tuple[int, int], torch.Tensor] = {}  # (edit, layer) -> (B,) gate of the last forward

    def __getstate__(self):  # deep copies: the last forward's gates belong to its autograd graph
        state = super().__getstate__()
        return {**state, "gates": {}}

    # The hooks are bound methods of the stack (or partials of them): a deep copy of the model gets
    # hooks bound to its own copy of the stack, and `detach_hooks` finds them by owner.
    def attach(self, model: nn.Module) -> None:
        self.detach_hooks(model)
        base_causal_lm(model).register_forward_pre_hook(self._before_forward, with_kwargs=True)
        blocks = decoder_layers(model)
        for layer in sorted({layer for edit in self.edits for layer in edit.layers}):
            blocks[layer].register_forward_hook(functools.partial(self._after_block, layer))

    def _owns(self, hook) -> bool:
        target = hook.func if isinstance(hook, functools.partial) else hook
        return getattr(target, "__self__", None) is self

    def detach_hooks(self, model: nn.Module) -> None:
        for module in (base_causal_lm(model), *decoder_layers(model)):
            for hooks, with_kwargs in ((module._forward_pre_hooks, module._forward_pre_hooks_with_kwargs),
                                       (module._forward_hooks, module._forward_hooks_with_kwargs)):
                for key in [k for k, hook in hooks.items() if self._owns(hook)]:
                    del hooks[key]
                    with_kwargs.pop(key, None)

    def scale(self) -> float:
        active = sum(1 for e in self.edits if e.enabled)
        return 1.0 if active <= 1 else self.combine_scale * active + self.combine_bias

    def _before_forward(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        length = ids.shape[1] if ids is not None else embeds.shape[1]
        self.offset = tokens_in_cache(args, kwargs)
        self.gates = {}
        if self.explicit is not None:
            self.positions = self.explicit
        elif self.offset == 0:
            mask = kwargs.get("attention_mask")
            if mask is None or mask.dim() != 2:
                batch = (ids if ids is not None else embeds).shape[0]
                self.positions = torch.full((batch,), length - 1, dtype=torch.long)
            else:  # last attended token of each row
                self.positions = (length - 1 - mask[:, :length].flip(-1).long().argmax(-1)).long()
        return None

    def _after_block(self, layer: int, _module, _args, output):
        active = [(i, e) for i, e in enumerate(self.edits) if e.enabled and layer in e.layers]
        if self.disabled or not active or self.positions is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        local = self.positions.to(hidden.device) - self.offset
        rows = ((local >= 0) & (local < hidden.shape[1])).nonzero().squeeze(-1)
        if rows.numel() == 0:
            return None
        cols = local[rows]
        h = hidden[rows, cols]  # (N, d)
        delta = torch.zeros_like(h, dtype=torch.float32)
        scale = self.scale()
        for index, edit in active:
            phi, gate = edit.per_layer[str(layer)](h)
            full = gate.new_zeros(hidden.shape[0]).index_put((rows,), gate)
            self.gates[(index, layer)] = full
            delta = delta + scale * gate.unsqueeze(-1) * phi
        edited = hidden.index_put((rows, cols), (h.float() + delta).to(hidden.dtype))
        return (edited, *output[1:]) if isinstance(output, tuple) else edited


def edit_stack(model: nn.Module) -> EditStack | None:
    stack = getattr(base_causal_lm(model), ATTRIBUTE, None)
    return stack if isinstance(stack, EditStack) else None


def has_edits(model: nn.Module) -> bool:
    stack = edit_stack(model)
    return stack is not None and len(stack.edits) > 0


def add_edit(model: nn.Module, layers: list[int], rank: int, gate: str = "linear",
             gate_hidden: tuple[int, ...] = (256, 64), combine_scale: float = 0.6,
             combine_bias: float = 0.6) -> Edit:
    """Attach a new trainable edit (earlier edits are kept) and return it."""
    lm = base_causal_lm(model)
    stack = edit_stack(model)
    if stack is None:
        stack = EditStack(combine_scale, combine_bias)
        lm.add_module(ATTRIBUTE, stack)
    edit = Edit(layers, hidden_size(model), rank, gate, gate_hidden)
    device = next(lm.parameters()).device
    stack.edits.append(edit.to(device))
    stack.attach(model)
    return edit


@contextlib.contextmanager
def edits_disabled(model: nn.Module) -> Iterator[None]:
    """The model without its edits for the duration (a no-op without edits)."""
    stack = edit_stack(model)
    if stack is None:
        yield
        return
    stack.disabled += 1
    try:
        yield
    finally:
        stack.disabled -= 1


@contextlib.contextmanager
def edit_positions(model: nn.Module, positions: torch.Tensor) -> Iterator[None]:
    """Edit at `positions` (B,) — the last prompt token of each row — in forwards inside the context."""
    stack = edit_stack(model)
    if stack is None:
        yield
        return
    saved, stack.explicit = stack.explicit, positions
    try:
        yield
    finally:
        stack.explicit = saved


@contextlib.contextmanager
def only_edit_enabled(model: nn.Module, edit: Edit) -> Iterator[None]:
    """Every other edit off (training one request's edit independently of earlier ones)."""
    stack = edit_stack(model)
    saved = [e.enabled for e in stack.edits]
    for e in stack.edits:
        e.enabled = e is edit
    try:
        yield
    finally:
        for e, flag in zip(stack.edits, saved):
            e.enabled = flag


def save_edits(model: nn.Module, directory: str | Path) -> bool:
    """Write edits.safetensors + edits.json into `directory`; False when the model has no edits."""
    from safetensors.torch import save_file

    stack = edit_stack(model)
    if stack is None or not stack.edits:
        return False
    tensors: dict[str, torch.Tensor] = {}
    for i, edit in enumerate(stack.edits):
        for layer, module in edit.per_layer.items():
            prefix = f"edit{i}.layer{layer}"
            tensors[f"{prefix}.rotation"] = module.rotation.weight.detach().float().cpu().contiguous()
            for name, value in module.source.state_dict().items():
                tensors[f"{prefix}.source.{name}"] = value.detach().float().cpu().contiguous()
            for name, value in module.gate.state_dict().items():
                tensors[f"{prefix}.gate.{name}"] = value.detach().float().cpu().contiguous()
    config = {"format": "unlearnkit-gated-loreft", "version": 1, "combine_scale": stack.combine_scale,
              "combine_bias": stack.combine_bias, "edits": [e.config for e in stack.edits]}
    directory = Path(directory)
    save_file(tensors, str(directory / EDITS_FILE))
    (directory / EDITS_CONFIG).write_text(json.dumps(config, indent=2))
    return True


def load_edits(model: nn.Module, directory: str | Path) -> bool:
    """Attach the (frozen) edits saved in `directory`; False when it holds none."""
    from safetensors.torch import load_file

    from unlearnkit.errors import UnlearnError

    directory = Path(directory)
    if not (directory / EDITS_CONFIG).is_file():
        return False
    config = json.loads((directory / EDITS_CONFIG).read_text())
    if config.get("format") != "unlearnkit-gated-loreft":
        raise UnlearnError(f"{directory / EDITS_CONFIG}: not an unlearnkit edit file (format {config.get('format')!r})")
    tensors = load_file(str(directory / EDITS_FILE))
    lm = base_causal_lm(model)
    stack = EditStack(config["combine_scale"], config["combine_bias"])
    dim = hidden_size(model)
    for i, spec in enumerate(config["edits"]):
        edit = Edit(spec["layers"], dim, spec["rank"], spec["gate"], tuple(spec["gate_hidden"]), orthogonal=False)
        for layer, module in edit.per_layer.items():
            prefix = f"edit{i}.layer{layer}"
            module.rotation.weight.data.copy_(tensors[f"{prefix}.rotation"])
            module.source.load_state_dict({k[len(prefix) + 8:]: v for k, v in tensors.items()
                                           if k.startswith(f"{prefix}.source.")})
            module.gate.load_state_dict({k[len(prefix) + 6:]: v for k, v in tensors.items()
                                         if k.startswith(f"{prefix}.gate.")})
        edit.requires_grad_(False)
        stack.edits.append(edit)
    lm.add_module(ATTRIBUTE, stack.to(next(lm.parameters()).device))
    stack.attach(model)
    return True


@contextlib.contextmanager
def edits_detached(model: nn.Module) -> Iterator[EditStack | None]:
    """Temporarily take the stack out of the module tree (so `save_pretrained` saves only the LM)."""
    lm = base_causal_lm(model)
    stack = edit_stack(model)
    if stack is None:
        yield None
        return
    delattr(lm, ATTRIBUTE)
    try:
        yield stack
    finally:
        lm.add_module(ATTRIBUTE, stack)
