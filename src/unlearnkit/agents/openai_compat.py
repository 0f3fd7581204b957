"""An OpenAI-compatible chat endpoint as a chat backend (OpenAI, vLLM, TGI, llama.cpp server, ...).

One request per `chat` call: ``POST {base_url}/chat/completions`` with
``{"model", "messages", "temperature", "max_tokens"}``; the reply is ``choices[0].message.content``.
Standard library only (``urllib.request``), so no client package is needed.

Secrets: the API key is read from the environment variable *named* by ``api_key_env`` at each request
and sent as ``Authorization: Bearer ...``. It is never a field, never stored on the object (so it is in
no repr), never logged. An unset variable sends no Authorization header (local servers usually need
none); an ``api_key_env`` that holds a key instead of a name is refused (without echoing it).
Credentials in ``base_url`` (``http://user:KEY@host/v1``) are sent as HTTP Basic auth (when no key
variable is set) and never as part of the URL. Every message shows the URL through
`secrets.redact_url` and quotes server text through `secrets.redact`, which also removes any piece of
6+ characters of the key or the URL's credentials (a server that echoes the key's tail leaks nothing).

Failures raise `BackendError` with one line: the URL, what went wrong, and what to check. Rate limits
(HTTP 429), server errors (5xx), timeouts and refused connections are retried ``retries`` times with
exponential backoff (``backoff``, ``2·backoff``, ...; a numeric ``Retry-After`` header wins, capped at
60 s); other HTTP errors (401, 404, ...) and malformed replies fail at once.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Sequence

from unlearnkit.agents.base import BackendError, ChatBackend
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import BACKENDS
from unlearnkit.secrets import check_key_env, redact, redact_url, register_key_env, register_url, url_secrets

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
        check_key_env("backend 'openai_compat'", self.api_key_env)
        register_key_env(self.api_key_env)
        register_url(self.base_url)
        if not self.base_url.startswith(("http://", "https://")):
            raise UnlearnError(f"backend 'openai_compat': base_url '{redact_url(self.base_url)}' must start with"
                               " http:// or https:// (e.g. http://localhost:8000/v1 for a local vLLM server)")
        try:
            parts = urllib.parse.urlsplit(self.base_url)
            _ = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        if parts is None or not parts.hostname:
            raise UnlearnError(f"backend 'openai_compat': base_url '{redact_url(self.base_url)}' is not a valid URL"
                               " (expected http(s)://host[:port]/path, e.g. http://localhost:8000/v1)")
        if not self.model:
            raise UnlearnError("backend 'openai_compat': `model` is empty; give the model name the endpoint serves")
        if self.timeout <= 0:
            raise UnlearnError(f"backend 'openai_compat': timeout must be > 0 seconds, got {self.timeout}")
        if self.retries < 0 or self.backoff < 0:
            raise UnlearnError(f"backend 'openai_compat': retries and backoff must be >= 0, got retries="
                               f"{self.retries}, backoff={self.backoff}")

    def __repr__(self) -> str:
        return (f"OpenAICompatBackend(base_url={redact_url(self.base_url)!r}, model={self.model!r},"
                f" api_key_env={self.api_key_env!r}, timeout={self.timeout!r}, retries={self.retries!r},"
                f" backoff={self.backoff!r})")

    @property
    def url(self) -> str:
        """The endpoint as shown in messages: credentials replaced by ***."""
        return redact_url(_endpoint(self.base_url))

    def _request_url(self) -> tuple[str, str | None]:
        """(the endpoint without userinfo, a Basic auth header value from the userinfo or None)."""
        parts = urllib.parse.urlsplit(_endpoint(self.base_url))
        if "@" not in parts.netloc:
            return parts.geturl(), None
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        return parts._replace(netloc=host).geturl(), "Basic " + base64.b64encode(pair).decode()

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
        url, basic = self._request_url()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif basic:
            headers["Authorization"] = basic
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
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
            raise _Retryable(f"openai_compat: could not reach {self.url}: {self._redact(str(reason), key)}") from None
        except OSError as err:  # a connection reset mid-reply and the like
            raise _Retryable(f"openai_compat: the connection to {self.url} failed:"
                             f" {self._redact(str(err), key)}") from None
        except http.client.HTTPException as err:  # a malformed or truncated reply
            raise _Retryable(f"openai_compat: the reply from {self.url} was cut off or malformed:"
                             f" {self._redact(str(err) or type(err).__name__, key)}") from None
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
        message = f"openai_compat: {self.url} answered HTTP {err.code}: {self._redact(str(reason), key)}"
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
                               f" (starts with {self._redact(_snippet(text), key)!r})") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"openai_compat: the reply from {self.url} has no choices[0].message.content"
                               f" (got {self._redact(_snippet(text), key)!r}); is base_url an OpenAI-compatible"
                               " chat endpoint?") from None
        if not isinstance(content, str):
            raise BackendError(f"openai_compat: the reply from {self.url} has no text in choices[0].message.content"
                               f" (got {type(content).__name__}; a refusal or tool call?)")
        return content

    def _redact(self, text: str, key: str) -> str:
        """`text` without the key, the URL's credentials, or any piece of 6+ characters of either."""
        return redact(text, {key, *url_secrets(self.base_url)})


def _endpoint(base_url: str) -> str:
    """``{base_url}/chat/completions``, keeping a query string (``?api-version=...``) at the end."""
    base, mark, query = base_url.partition("?")
    return base.rstrip("/") + "/chat/completions" + mark + query


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


def _retry_after(value: str | None) -> float | None:
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None
