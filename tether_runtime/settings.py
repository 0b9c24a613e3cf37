"""Typed frozen settings from the environment: the one loader of every Tether process.

A process's settings are a frozen dataclass; an `EnvLoader` declares how the environment fills it. Each
field is read from one variable, `prefix + FIELD IN UPPER CASE`, unless `names` maps it to another suffix
(`names` also limits the fields read; `exclude` leaves some out). The text is parsed by the field's type:

    str              the text, stripped
    int              an integer
    float            a finite number
    bool             1, true, yes, on / 0, false, no, off (any case)
    Literal["a", …]  one of the strings (any case; the declared spelling is kept)
    tuple[X, ...]    comma-separated X (str, int or float), blank parts dropped
    X | None         none or off (any case) is None when X is not str; otherwise as X

An empty or blank variable counts as unset: the field keeps its default; for the fields in `keep_empty` it
is a value (the empty text, or the empty list: e.g. "run none of these").

A bad text raises the loader's error class (`SettingsError`, or the service's own) with a message naming
the variable, its text (`<not shown>` for a `hidden` field) and the field:

    TETHER_BOX_PORT='eighty' is not a valid int (setting port)

Ranges and relations between fields are the settings class's own checks (its `__post_init__`), which also
guard values given in code or by command-line flags (`load(environ, **overrides)`).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Collection, Mapping
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = [
    "FALSE_WORDS",
    "NONE_WORDS",
    "TRUE_WORDS",
    "EnvLoader",
    "Parser",
    "SettingsError",
    "parser_for",
]

T = TypeVar("T")

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
NONE_WORDS = ("none", "off")
HIDDEN = "<not shown>"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable (or the flag) and the field."""


@dataclasses.dataclass(frozen=True, slots=True)
class Parser:
    """How the text of one field becomes its value: `parse` raises ValueError on a text that is not
    `expected` (e.g. "a valid int"), which the error message quotes."""

    parse: Callable[[str], object]
    expected: str


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_SCALARS: dict[object, Parser] = {
    str: Parser(str, "a valid str"),
    int: Parser(int, "a valid int"),
    float: Parser(_float, "a valid float (a finite number)"),
    bool: Parser(_bool, "a valid bool (1/0, true/false, yes/no, on/off)"),
}


def parser_for(kind: object) -> Parser:
    """The parser of a field annotated `kind` (a resolved type hint); TypeError for a type it cannot read."""
    if kind in _SCALARS:
        return _SCALARS[kind]
    origin, args = get_origin(kind), get_args(kind)
    if origin is Literal and args and all(isinstance(a, str) for a in args):
        return _choice(tuple(str(a) for a in args))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (str, int, float):
        item = _SCALARS[args[0]]
        return Parser(
            lambda text: tuple(item.parse(p.strip()) for p in text.split(",") if p.strip()),
            f"a valid list of {args[0].__name__} (comma-separated)",
        )
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        base = parser_for(inner)
        if inner is str:
            return base
        return Parser(
            lambda text: None if text.lower() in NONE_WORDS else base.parse(text),
            f"{base.expected} or none/off",
        )
    raise TypeError(f"no environment parser for a field of type {kind!r}")


def _choice(choices: tuple[str, ...]) -> Parser:
    by_lower = {c.lower(): c for c in choices}

    def parse(text: str) -> str:
        found = by_lower.get(text.lower())
        if found is None:
            raise ValueError(text)
        return found

    return Parser(parse, "one of " + ", ".join(choices))


class EnvLoader(Generic[T]):
    """Reads the settings dataclass `cls` from `prefix`-ed variables (see the module docstring).

    `names` maps fields to variable suffixes (only those fields are read); by default every init field is,
    as `FIELD.upper()`, except those in `exclude`. `hidden` fields never show their text in an error;
    `keep_empty` fields take an empty variable as a value rather than as unset.
    `error` is the exception class raised for a bad text or an unknown override.
    """

    def __init__(
        self,
        cls: type[T],
        prefix: str,
        *,
        names: Mapping[str, str] | None = None,
        exclude: Collection[str] = (),
        hidden: Collection[str] = (),
        keep_empty: Collection[str] = (),
        error: Callable[[str], Exception] = SettingsError,
    ) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        init_fields = [f.name for f in dataclasses.fields(cls) if f.init]
        if names is None:
            names = {name: name.upper() for name in init_fields if name not in exclude}
        unknown = set(names) - set(init_fields)
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
        hints = get_type_hints(cls)
        self.cls = cls
        self.prefix = prefix
        self.error = error
        self.fields = tuple(init_fields)
        self.hidden = frozenset(hidden)
        self.keep_empty = frozenset(keep_empty)
        self.variables: Mapping[str, str] = {field: prefix + suffix for field, suffix in names.items()}
        self._parsers = {field: parser_for(hints[field]) for field in self.variables}

    def parse(self, field: str, raw: str, *, source: str | None = None) -> Any:
        """`raw` (a variable's or a flag's text) as the value of `field`; `source` names it in the error
        (default: the field's variable)."""
        parser = self._parsers[field]
        try:
            return parser.parse(raw.strip())
        except ValueError:
            shown = HIDDEN if field in self.hidden else repr(raw)
            where = source or self.variables[field]
            raise self.error(f"{where}={shown} is not {parser.expected} (setting {field})") from None

    def read(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The values of the fields whose variable is set in `environ` (not blank, but for `keep_empty`)."""
        values: dict[str, Any] = {}
        for field, variable in self.variables.items():
            raw = environ.get(variable)
            if raw is not None and (raw.strip() or field in self.keep_empty):
                values[field] = self.parse(field, raw)
        return values

    def build(self, values: Mapping[str, Any]) -> T:
        """`cls(**values)`; a name that is no field raises the loader's error (the class's own checks
        raise what they raise)."""
        unknown = set(values) - set(self.fields)
        if unknown:
            raise self.error(f"unknown settings: {', '.join(sorted(unknown))}")
        return self.cls(**values)

    def load(self, environ: Mapping[str, str], **overrides: Any) -> T:
        """Settings from `environ`, with `overrides` (command-line flags; None: not given) on top."""
        given = {name: value for name, value in overrides.items() if value is not None}
        return self.build({**self.read(environ), **given})
