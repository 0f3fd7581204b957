"""A local Hugging Face chat model as a chat backend (hub id or directory; no server, no network).

`chat(messages)` renders the conversation with the tokenizer's own chat template (generation prompt
appended; the template writes BOS itself, so no special tokens are added on top), generates through
`benchmarks.generation.generate`, and returns the new text up to the first EOS (the tokenizer's and the
model's generation-config EOS ids), stripped.

Decoding is explicit, never inherited from the checkpoint (an instruct model's generation_config
usually samples; specs pitfall 7): ``temperature == 0`` decodes greedily; ``temperature > 0`` samples
from the tempered distribution (top-p ``top_p``, no top-k) with seed ``seed + n`` for the n-th call,
inside a forked RNG, so a run of calls is reproducible and the global torch RNG is left untouched.

The model loads lazily on the first call through `models.load_model` (safetensors only,
``trust_remote_code`` only when the field says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from unlearnkit.agents.base import BackendError, ChatBackend
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import BACKENDS

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # the names models.DTYPES accepts (no torch import here)

@BACKENDS.register("hf_local")
@dataclass
class HFLocalBackend(ChatBackend):
    """A local Hugging Face chat model answering through its chat template (greedy unless temperature > 0)."""

    model: str | None = None  # hub id or local directory of a chat (instruct) model
    tokenizer: str | None = None  # default: the same id/dir as `model`
    revision: str | None = None
    dtype: str = "bfloat16"
    device: str = "auto"  # "auto": cuda when available, else cpu
    trust_remote_code: bool = False
    seed: int = 0  # the n-th sampled call uses seed + n
    top_p: float = 1.0  # nucleus sampling when temperature > 0 (1.0: the full tempered distribution)

    def __post_init__(self) -> None:
        if not self.model:
            raise UnlearnError("backend 'hf_local' needs `model`: a hub id or a local directory of a chat model")
        if self.dtype not in DTYPE_NAMES:
            raise UnlearnError(f"backend 'hf_local': unknown dtype '{self.dtype}'; valid: {', '.join(DTYPE_NAMES)}")
        if not 0.0 < self.top_p <= 1.0:
            raise UnlearnError(f"backend 'hf_local': top_p must be in (0, 1], got {self.top_p}")
        self._loaded: tuple[Any, Any] | None = None
        self._calls = 0

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer), loaded once; the model in eval mode on `device`."""
        if self._loaded is None:
            from unlearnkit.model import load_model, load_tokenizer

            name = self.tokenizer or self.model
            tokenizer = load_tokenizer(name, revision=self.revision, trust_remote_code=self.trust_remote_code)
            if not getattr(tokenizer, "chat_template", None):
                raise UnlearnError(f"backend 'hf_local': the tokenizer of '{name}' has no chat template; use an"
                                   " instruct/chat model (or a tokenizer directory whose tokenizer_config sets one)")
            model = load_model(self.model, dtype=self.dtype, revision=self.revision,
                               trust_remote_code=self.trust_remote_code)
            from unlearnkit.model import resolve_device

            self._loaded = (model.to(resolve_device(self.device)).eval(), tokenizer)
        return self._loaded

    def chat(self, messages: Sequence[dict], *, temperature: float = 0.0, max_tokens: int = 512) -> str:
        from jinja2 import TemplateError

        from unlearnkit.benchmarks.generation import Decoding, generate

        if temperature < 0:
            raise BackendError(f"hf_local: temperature must be >= 0, got {temperature}")
        if max_tokens < 1:
            raise BackendError(f"hf_local: max_tokens must be at least 1, got {max_tokens}")
        model, tokenizer = self.load()
        try:
            text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        except (TemplateError, ValueError, TypeError) as err:  # e.g. "roles must alternate", a missing key
            raise BackendError(f"hf_local: the chat template of '{self.tokenizer or self.model}' rejected the"
                               f" messages: {err}") from None
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise BackendError("hf_local: the chat template rendered an empty prompt")
        sampling = {"do_sample": True, "temperature": temperature, "top_p": self.top_p} if temperature > 0 else {}
        decoding = Decoding(**sampling, top_k=0, seed=self.seed + self._calls, max_new_tokens=max_tokens, batch_size=1)
        self._calls += 1
        return generate(model, tokenizer, [ids], decoding)[0]
