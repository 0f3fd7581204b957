"""One `Registry` class, one instance per kind of component (methods, benchmarks, formats).

Components register themselves next to their code with a decorator::

    @METHODS.register("npo")
    @dataclass
    class NPO(UnlearningMethod): ...

A registry imports its package's modules the first time it is asked for a name, so the CLI
starts fast and no central list has to be edited. Unknown names and unknown fields raise
`UnlearnError` with a did-you-mean suggestion and the list of valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from typing import Any, Callable, TypeVar

from unlearnkit.errors import UnlearnError

T = TypeVar("T")


def did_you_mean(word: str, choices: list[str]) -> str:
    """' did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""


class Registry:
    """Name → component class, filled by `register` decorators in `package`'s modules."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, type] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> type:
        self._load()
        if name not in self._entries:
            valid = ", ".join(self.names())
            raise UnlearnError(
                f"unknown {self.kind} '{name}';{did_you_mean(name, self.names())} valid: {valid}"
            )
        return self._entries[name]

    def describe(self, name: str) -> str:
        """First line of the component's docstring (what `unlearn ls` prints)."""
        doc = (self.get(name).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def fields(self, name: str) -> dict[str, Any]:
        """Field name → default value (dataclass components only)."""
        cls = self.get(name)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = None
        return out

    def build(self, name: str, **values: Any) -> Any:
        """Instantiate component `name` with validated, type-coerced field values."""
        cls = self.get(name)
        known = list(self.fields(name))
        for key in values:
            if key not in known:
                raise UnlearnError(
                    f"unknown field '{key}' for {self.kind} '{name}';{did_you_mean(key, known)}"
                    f" fields: {', '.join(known) or '(none)'}"
                )
        from pydantic import TypeAdapter, ValidationError

        try:
            return TypeAdapter(cls).validate_python({**self.fields(name), **values})
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise UnlearnError(
                f"{self.kind} '{name}': field '{loc}' {first['msg'].lower()}"
                f" (got {first.get('input')!r}); fix the value in the recipe or override"
            ) from None


METHODS = Registry("method", "unlearnkit.methods")
JUDGES = Registry("judge", "unlearnkit.judges")
BACKENDS = Registry("backend", "unlearnkit.agents")
