"""Secrets: keep API keys and URL credentials out of everything the toolkit prints or writes.

Two kinds of secret are in play:

* API keys, read from the environment variable *named* by an ``api_key_env`` field (never a field
  value themselves). A backend registers the name it uses (`register_key_env`); ``OPENAI_API_KEY``
  (the default) and the Hugging Face token variables are always watched. `active_secrets()` is the set of their current values.
* Credentials inside a URL: the userinfo of ``http://user:KEY@host/v1`` and key-like query parameters
  (``?api_key=KEY``, ``&sig=...``). A backend given such a URL registers them (`register_url`).

`redact(text)` is what every error line and written record goes through: URLs lose their credentials
(`redact_url`), and every occurrence of a secret, and every run of `MIN_FRAGMENT` or more characters
that is a piece of one (an echoed head, tail or middle of a key), becomes ``***``. `redact_config`
does the same for a nested config (``Recipe.resolved()``, the dict written into report.json and
eval.json), and also hides values under key-like names (``api_key``, ``token``, ...).

`check_key_env` refuses an ``api_key_env`` that holds a key instead of a variable's name, without
echoing it: a key pasted there would otherwise be printed in error hints and saved with the recipe.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable
from urllib.parse import unquote, unquote_plus

MASK = "***"
MIN_SECRET = 4  # a secret shorter than this is only redacted inside URLs (too short to hunt in free text)
MIN_FRAGMENT = 6  # a run of this many characters of a secret, anywhere in a text, is redacted

# query parameters whose values are credentials (compared lower-cased, '-' read as '_')
KEY_PARAMS = frozenset({"api_key", "apikey", "key", "token", "access_token", "auth", "auth_token", "password",
                        "secret", "client_secret", "sig", "signature", "x_api_key", "code", "refresh_token"})
# config keys whose values are credentials wherever they appear (never legitimate recipe fields)
KEY_FIELDS = frozenset({"api_key", "apikey", "token", "access_token", "secret", "password", "authorization",
                        "auth_token", "bearer"})

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "pk_", "rk_", "hf_", "ghp_", "gho_", "ghs_", "ghu_", "github_pat_", "glpat-",
                 "xoxb-", "xoxp-", "AKIA", "ASIA", "AIza", "Bearer ", "bearer ", "gsk_", "pplx-", "nvapi-")

_key_env_names: set[str] = {"OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}  # defaults, always watched
_url_secrets: set[str] = set()


# ----------------------------------------------------------------------------------------- what is secret


def register_key_env(name: str) -> None:
    """Watch the variable `name`: its value is redacted from everything `redact` sees from now on."""
    if name:
        _key_env_names.add(name)


def register_url(url: str) -> None:
    """Remember the credentials inside `url` so that an echo of them anywhere is redacted."""
    _url_secrets.update(url_secrets(url))


def active_secrets() -> set[str]:
    """The current values of the watched key variables and the registered URL credentials."""
    values = {os.environ.get(name, "") for name in _key_env_names}
    return {v for v in values | _url_secrets if len(v) >= MIN_SECRET}


def url_secrets(url: str) -> set[str]:
    """Credentials inside `url`: the password (and a key-shaped or password-less user name) of its
    userinfo, and the values of key-like query parameters; raw and percent-decoded."""
    found: set[str] = set()
    match = re.match(r"(?:[A-Za-z][A-Za-z0-9+.\-]*://)?([^/?#]*)@", url)
    if match:
        user, has_password, password = match.group(1).partition(":")
        found.add(password)
        if not has_password or looks_like_key(unquote(user)):
            found.add(user)
    query = url.partition("?")[2].partition("#")[0]
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if _is_key_param(name):
            found.add(value)
    found |= {unquote_plus(v) for v in found}
    return {v for v in found if v}


def looks_like_key(value: str) -> bool:
    """True for strings shaped like an API key rather than an environment variable's name: a known key
    prefix (``sk-``, ``hf_``, ``ghp_``, ``AKIA``, ...), a long token with characters no variable name has,
    or a long letters-and-digits run without the ``WORDS_IN_CAPS`` shape of a variable name."""
    value = value.strip()
    if len(value) < 12:
        return False
    if value.startswith(_KEY_PREFIXES) and len(value) >= 20:
        return True
    if not _ENV_NAME.fullmatch(value):
        return len(value) >= 16
    has_digit = any(c.isdigit() for c in value)
    has_lower, has_upper = any(c.islower() for c in value), any(c.isupper() for c in value)
    if len(value) >= 32 and "_" not in value:
        return True
    return len(value) >= 20 and has_digit and ("_" not in value or (has_lower and has_upper))


def check_key_env(owner: str, value: str) -> None:
    """Refuse an ``api_key_env`` that is not a variable's name (most likely the key itself), never echoing it."""
    from unlearnkit.errors import UnlearnError

    if not value:
        return  # no variable: requests go out without an Authorization header
    is_name = _ENV_NAME.fullmatch(value) is not None
    if is_name and (value in os.environ or not looks_like_key(value)):
        return
    raise UnlearnError(f"{owner}: api_key_env must name an environment variable (e.g. OPENAI_API_KEY), not hold the"
                       " key itself; export the key and give the variable's name (its value is not shown here)")


# ----------------------------------------------------------------------------------------- redaction


def redact_url(url: str) -> str:
    """`url` with its userinfo replaced by ``***`` and the values of key-like query parameters by ``***``."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*://)?([^/?#]*)", url)  # also "user:KEY@host/v1" without a scheme
    scheme, authority = match.group(1) or "", match.group(2)
    rest = url[match.end():]
    if "@" in authority:
        authority = MASK + "@" + authority.rpartition("@")[2]
    if "?" in rest:
        path, _, query = rest.partition("?")
        query, hash_mark, fragment = query.partition("#")
        parts = []
        for part in query.split("&"):
            name, eq, value = part.partition("=")
            parts.append(f"{name}={MASK}" if eq and value and _is_key_param(name) else part)
        rest = path + "?" + "&".join(parts) + hash_mark + fragment
    return scheme + authority + rest


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with credentials removed from every URL in it, and every occurrence of a secret (`secrets` and
    `active_secrets()`) or of any run of >= `MIN_FRAGMENT` of its characters replaced by ``***``."""
    if not text:
        return text
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    pool = {s for s in secrets if s and len(s) >= MIN_SECRET} | active_secrets()
    if not pool:
        return text
    covered = bytearray(len(text))
    for secret in pool:
        _mark_occurrences(text, secret, covered)
        if len(secret) >= MIN_FRAGMENT:
            _mark_fragments(text, secret, covered)
    if not any(covered):
        return text
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(MASK)
        else:
            start = i
            while i < len(text) and not covered[i]:
                i += 1
            out.append(text[start:i])
    return "".join(out)


def redact_config(data: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a nested config (dicts, lists, scalars) safe to print or write: every string through
    `redact` (with the values of the variables its ``api_key_env`` fields name and the credentials of its
    URLs as extra secrets); values under key-like names (``api_key``, ``token``, ...) and ``api_key_env``
    values that are not a variable's name become ``***``."""
    extra = set(secrets)
    for name, value in _walk(data):
        if name == "api_key_env" and isinstance(value, str) and value:
            extra.add(os.environ.get(value, ""))
            if not _ENV_NAME.fullmatch(value) or looks_like_key(value):
                extra.add(value)
        if isinstance(value, str):
            for url in _URL.findall(value):
                extra |= url_secrets(url)
    extra = {s for s in extra if len(s) >= MIN_SECRET}
    return _redact_tree(data, extra)


# ----------------------------------------------------------------------------------------- internals


def _is_key_param(name: str) -> bool:
    return unquote_plus(name).strip().lower().replace("-", "_") in KEY_PARAMS


def _mark_occurrences(text: str, secret: str, covered: bytearray) -> None:
    start = text.find(secret)
    while start >= 0:
        covered[start : start + len(secret)] = b"\x01" * len(secret)
        start = text.find(secret, start + 1)


def _mark_fragments(text: str, secret: str, covered: bytearray) -> None:
    """Mark every window of `MIN_FRAGMENT` characters of `text` that occurs in `secret`. A longer common
    substring is the union of its windows, so maximal echoed pieces are covered whole: O(len(text)) lookups."""
    k = MIN_FRAGMENT
    windows = {secret[i : i + k] for i in range(len(secret) - k + 1)}
    for i in range(len(text) - k + 1):
        if text[i : i + k] in windows:
            covered[i : i + k] = b"\x01" * k


def _walk(data: Any, name: str | None = None):
    """(key, value) for every value in a nested structure; list items inherit their list's key."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _walk(value, str(key))
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from _walk(value, name)
    else:
        yield name, data


def _redact_tree(data: Any, secrets: set[str], name: str | None = None) -> Any:
    if isinstance(data, dict):
        return {key: _redact_tree(value, secrets, str(key)) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_redact_tree(value, secrets, name) for value in data]
    if isinstance(data, str):
        lowered = (name or "").lower().replace("-", "_")
        if data and (lowered in KEY_FIELDS or (lowered == "api_key_env" and not _is_safe_env_name(data))):
            return MASK
        return redact(data, secrets)
    return data


def _is_safe_env_name(value: str) -> bool:
    return _ENV_NAME.fullmatch(value) is not None and not looks_like_key(value)
