"""The chat-backend interface agents and API judges talk to.

`chat(messages, temperature=..., max_tokens=...) -> str`: `messages` is a list of
``{"role": "system" | "user" | "assistant", "content": str}``, the reply is the assistant's text.
Backends raise `BackendError` (an `UnlearnError`) with a one-line reason on timeouts, HTTP errors and
malformed replies, never a bare traceback; secrets (API keys) never appear in messages or logs.
"""

from __future__ import annotations

from typing import Sequence

from unlearnkit.errors import UnlearnError


class BackendError(UnlearnError):
    """A backend could not produce a reply (timeout, HTTP error, malformed reply)."""


class ChatBackend:
    def chat(self, messages: Sequence[dict], *, temperature: float = 0.0, max_tokens: int = 512) -> str:  # pragma: no cover
        raise NotImplementedError
