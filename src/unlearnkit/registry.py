"""One `Registry` class, one instance per kind of component (methods, benchmarks, formats).

Components register themselves next to their code with a decorator::

    @METHODS.register("npo")
    @dataclass
    class NPO(UnlearningMethod): ...

A registry imports its package's modules the first time it is asked for a name, so the CLI
starts fast and no central list has to be edited. Unknown names and unknown fields raise
`UnlearnError` with a did-you-mean suggestion and the list of valid choices.

Fields declare their valid range with the types below (`beta: Positive = 0.1`); `build` validates
them with pydantic, and a value out of range is one line naming the field, the range, what it got
and an example (`method 'npo': field 'beta' must be greater than 0 (got 0); e.g. method.beta=0.1`).
The recipe schema (`unlearnkit.recipe`) uses the same types and the same wording.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import pkgutil
from typing import Annotated, Any, Callable, TypeVar

from pydantic import BeforeValidator, Field

from unlearnkit.errors import UnlearnError

T = TypeVar("T")


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read true as 1
        raise ValueError("must be a number, not true or false")
    return value


_NUMBER = BeforeValidator(_not_bool)  # placed after Field(): it runs first, and nan still reads "finite"
# Numbers with their valid ranges (nan and inf are refused everywhere, and so are true / false).
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False), _NUMBER]  # rates, scales, temperatures, β where it divides
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False), _NUMBER]  # loss weights, decay
Finite = Annotated[float, Field(allow_inf_nan=False), _NUMBER]  # signed scales and margins
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), _NUMBER]  # probabilities, shares, ratios
PositiveInt = Annotated[int, Field(ge=1), _NUMBER]  # sizes, counts, steps
NonNegativeInt = Annotated[int, Field(ge=0), _NUMBER]  # counts where 0 turns something off
Seed = Annotated[int, Field(ge=0, le=2**32 - 1), _NUMBER]  # numpy's seed range

_BOUNDS = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
           "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}


def show_value(value: Any) -> str:
    """A value as it is written in a recipe or an override: 1e-05, null, true, [0.5, 1.0]."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value, default=str)
    return str(value)


def field_problem(error: dict) -> str:
    """What one pydantic error says is wrong, worded to follow "field 'x'": "must be at least 1"."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"must be {words} {show_value(ctx[key])}"
    if kind == "finite_number":
        return "must be a finite number"
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "missing":
        return "is missing"
    message = error["msg"]
    if message.startswith("Input should be"):
        return "must be" + message[len("Input should be"):]
    return message[:1].lower() + message[1:]


def field_location(loc: tuple | list) -> str:
    """'layers[0]' from pydantic's ('layers', 0, 'int'): list indices kept, union branch tags dropped."""
    out = str(loc[0]) if loc else ""
    return out + "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))


def did_you_mean(word: str, choices: list[str]) -> str:
    """' did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""


class Registry:
    """Name → component class, filled by `register` decorators in `package`'s modules."""

    def __init__(self, kind: str, package: str, override_prefix: str = ""):
        self.kind = kind
        self.package = package
        self.override_prefix = override_prefix  # how a recipe override names a field: "method." + "beta"
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
        if not isinstance(name, str) or name not in self._entries:
            valid = ", ".join(self.names())
            raise UnlearnError(
                f"unknown {self.kind} '{name}';{did_you_mean(str(name), self.names())} valid: {valid}"
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

        defaults = self.fields(name)
        try:
            return TypeAdapter(cls).validate_python({**defaults, **values})
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            prefix = self.override_prefix.replace("NAME", name)
            example = (f"; e.g. {prefix}{field}={show_value(defaults[field])}" if field in defaults
                       else "; fix the value in the recipe or override")
            raise UnlearnError(
                f"{self.kind} '{name}': field '{field_location(first['loc'])}' {field_problem(first)}"
                f" (got {first.get('input')!r}){example}"
            ) from None


METHODS = Registry("method", "unlearnkit.methods", override_prefix="method.")
JUDGES = Registry("judge", "unlearnkit.judges")
BACKENDS = Registry("backend", "unlearnkit.agents")
BENCHMARKS = Registry("benchmark", "unlearnkit.benchmarks")
ATTACKS = Registry("attack", "unlearnkit.attacks", override_prefix="attacks.NAME.")
