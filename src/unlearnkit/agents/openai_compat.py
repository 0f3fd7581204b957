"""An OpenAI-compatible chat endpoint as a chat backend (OpenAI, vLLM, TGI, llama.cpp server, ...).

One request per `chat` call: ``POST {base_url}/chat/completions`` with
``{"model", "messages", "temperature", "max_tokens"}``; the reply is ``choices[0].message.content``.
Standard library only (``urllib.request``), so no client package is needed.

Secrets: the API key is read from the environment variable *named* by ``api_key_env`` at each request
and sent as ``Authorization: Bearer ...``. It is never a field, never stored on the object (so it is in
no repr), never logged, and removed from any text an error message quotes from the server. An unset
variable sends no Authorization header (local servers usually need none).

Failures raise `BackendError` with one line: the URL, what went wrong, and what to check. Rate limits
(HTTP 429), server errors (5xx), timeouts and refused connections are retried ``retries`` times with
exponential backoff (``backoff``, ``2·backoff``, ...; a numeric ``Retry-After`` header wins, capped at
60 s); other HTTP errors (401, 404, ...) and malformed replies fail at once.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Sequence

from unlearnkit.agents.base import BackendError, ChatBackend
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import BACKENDS

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
_SNIPPET_CHARS = 160


class _Retryable(Exception):
    """An attempt failed in a way worth retrying; `message` is the BackendError text if it stays failed."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.message = message
        self.wait = wait


@BACKENDS.register("openai_compat")
@dataclass
class OpenAICompatBackend(ChatBackend):
    """An OpenAI-compatible /chat/completions endpoint (key from an environment variable, retries, timeouts)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key, never the key
    timeout: float = 60.0  # seconds per request
    retries: int = 3  # extra attempts after a 429, 5xx, timeout or refused connection
    backoff: float = 1.0  # seconds before the first retry, doubled for each further one

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise UnlearnError(f"backend 'openai_compat': base_url '{self.base_url}' must start with http:// or"
                               " https:// (e.g. http://localhost:8000/v1 for a local vLLM server)")
        if not self.model:
            raise UnlearnError("backend 'openai_compat': `model` is empty; give the model name the endpoint serves")
        if self.timeout <= 0:
            raise UnlearnError(f"backend 'openai_compat': timeout must be > 0 seconds, got {self.timeout}")
        if self.retries < 0 or self.backoff < 0:
            raise UnlearnError(f"backend 'openai_compat': retries and backoff must be >= 0, got retries="
                               f"{self.retries}, backoff={self.backoff}")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def chat(self, messages: Sequence[dict], *, temperature: float = 0.0, max_tokens: int = 512) -> str:
        body = json.dumps({"model": self.model, "messages": list(messages), "temperature": temperature,
                           "max_tokens": max_tokens}).encode()
        key = os.environ.get(self.api_key_env, "")
        for attempt in range(self.retries + 1):
            try:
                return self._attempt(body, key)
            except _Retryable as failure:
                if attempt == self.retries:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise BackendError(failure.message + tries) from None
                wait = failure.wait if failure.wait is not None else self.backoff * 2 ** attempt
                time.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    def _attempt(self, body: bytes, key: str) -> str:
        """One request: the reply text, `_Retryable`, or `BackendError` for failures retrying cannot fix."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise self._http_failure(err, key) from None
        except TimeoutError:  # while reading the reply
            raise self._timed_out() from None
        except urllib.error.URLError as err:  # while connecting or sending
            reason = err.reason
            if isinstance(reason, TimeoutError):
                raise self._timed_out() from None
            if isinstance(reason, ConnectionRefusedError):
                raise _Retryable(f"openai_compat: could not connect to {self.url}: connection refused"
                                 " (is the server running, and is base_url right?)") from None
            raise _Retryable(f"openai_compat: could not reach {self.url}: {_redact(str(reason), key)}") from None
        except OSError as err:  # a connection reset mid-reply and the like
            raise _Retryable(f"openai_compat: the connection to {self.url} failed:"
                             f" {_redact(str(err), key)}") from None
        return self._content(raw, key)

    def _timed_out(self) -> _Retryable:
        return _Retryable(f"openai_compat: {self.url} did not answer within {self.timeout:g} s"
                          " (raise `timeout`, or check the server's load)")

    def _http_failure(self, err: urllib.error.HTTPError, key: str) -> Exception:
        """`_Retryable` for 429/5xx, else `BackendError`: status, the server's short reason, a hint."""
        try:
            detail = err.read().decode("utf-8", "replace")
        except OSError:
            detail = ""
        reason = _error_reason(detail) or err.reason or ""
        message = f"openai_compat: {self.url} answered HTTP {err.code}: {_redact(str(reason), key)}"
        if err.code in (401, 403):
            state = "set" if key else "unset"
            message += f" (check the API key in ${self.api_key_env}, which is {state})"
        elif err.code == 404:
            message += f" (check base_url and that the server serves model '{self.model}')"
        if err.code in RETRY_STATUSES:
            return _Retryable(message, _retry_after(err.headers.get("Retry-After") if err.headers else None))
        return BackendError(message)

    def _content(self, raw: bytes, key: str) -> str:
        text = raw.decode("utf-8", "replace")
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            raise BackendError(f"openai_compat: the reply from {self.url} is not JSON"
                               f" (starts with {_redact(_snippet(text), key)!r})") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"openai_compat: the reply from {self.url} has no choices[0].message.content"
                               f" (got {_redact(_snippet(text), key)!r}); is base_url an OpenAI-compatible"
                               " chat endpoint?") from None
        if not isinstance(content, str):
            raise BackendError(f"openai_compat: the reply from {self.url} has no text in choices[0].message.content"
                               f" (got {type(content).__name__}; a refusal or tool call?)")
        return content


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


def _error_reason(detail: str) -> str:
    """The server's short reason: OpenAI's ``{"error": {"message": ...}}``, else the body's first characters."""
    try:
        payload: Any = json.loads(detail)
    except json.JSONDecodeError:
        return _snippet(detail)
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return _snippet(error["message"])
    if isinstance(error, str):
        return _snippet(error)
    return _snippet(detail)


def _redact(text: str, key: str) -> str:
    """`text` with the key (and any run of 8+ of its leading characters) replaced by ***."""
    if not key:
        return text
    text = text.replace(key, "***")
    prefix = key[:8]
    return text.replace(prefix, "***") if len(prefix) == 8 else text


def _retry_after(value: str | None) -> float | None:
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None
