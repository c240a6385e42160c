"""One typed config tree: every config section is a frozen dataclass on `Config`.

Field annotations are the schema. `from_dict` checks keys, types and choices from them (`Literal[...]` lists
the choices, `tuple[X, ...]` wants a list, a nested `Config` a mapping), converts YAML's 1 to 1.0 for floats,
and names the full key path in every one-line error:

    methods[3].params.train.lr='fast' is not a number — fix: give lr as a number

Range checks live in each section's `validate()`, written with `self.require(ok, field, expected)`, so all
messages have one shape. `to_dict()` gives plain JSON-able data (tuples as lists) that `from_dict` reads back.
The same machinery checks a rebalancer's parameters (`parse_fields` / `coerce_fields` on any dataclass).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union

from diffbalance.infra.errors import DiffbalanceError

_PATH: contextvars.ContextVar[str] = contextvars.ContextVar("config_path", default="")


def join(path: str, key: str | int) -> str:
    """'methods[3]' + 'params' → 'methods[3].params'; 'methods' + 3 → 'methods[3]'."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@contextlib.contextmanager
def at_path(path: str) -> Iterator[None]:
    """Messages raised while building a section inside this block name `path` as the section's key path."""
    token = _PATH.set(path)
    try:
        yield
    finally:
        _PATH.reset(token)


def current_path(key: str) -> str:
    return join(_PATH.get(), key)


class _Mismatch(Exception):
    """A value that does not fit an annotation; `expected` says what would (e.g. 'a number'), `path` where."""

    def __init__(self, expected: str, path: str | None = None, value: Any = None):
        self.expected, self.path, self.value = expected, path, value


def _type_name(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    origin = typing.get_origin(tp)
    if tp in names:
        return names[tp]
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "a mapping of options"
    return getattr(tp, "__name__", str(tp))


def parse_value(tp: Any, value: Any, path: str) -> Any:
    """`value` checked against annotation `tp` and converted (list → tuple, int → float, mapping → section).
    Returns `value` itself when it already fits, so parameters keep their identity (sklearn's `clone`)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(arg, value, path)
            except _Mismatch:
                continue
        raise _Mismatch(_type_name(tp))
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise _Mismatch(_type_name(tp))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch("an integer")
    if tp is float:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch("a string")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch("a list")
        (item,) = typing.get_args(tp)[:1]
        items = tuple(_parse_item(item, v, join(path, i)) for i, v in enumerate(value))
        same = isinstance(value, tuple) and all(a is b for a, b in zip(items, value))
        return value if same else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch("a mapping")
        args = typing.get_args(tp)
        if not args:
            return value if isinstance(value, dict) else dict(value)
        out = {_parse_item(args[0], k, path): _parse_item(args[1], v, join(path, str(k))) for k, v in value.items()}
        same = isinstance(value, dict) and all(out[k] is value[k] for k in value)
        return value if same else out
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch("a mapping of options")
        return build(tp, value, path)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch(_type_name(tp))
    return value


def _parse_item(tp: Any, value: Any, path: str) -> Any:
    """An element of a list or mapping: a mismatch names the element's own path (`classifiers[0]`)."""
    try:
        return parse_value(tp, value, path)
    except _Mismatch as err:
        raise _Mismatch(err.expected, err.path or path, value if err.path is None else err.value) from None


def _field_error(path: str, value: Any, expected: str, what: str | None = None) -> DiffbalanceError:
    """`what` names the field's kind in messages (field metadata "what", e.g. "dataset"); default its name."""
    name = path.rsplit(".", 1)[-1].split("[")[0]
    shown = repr(value) if not isinstance(value, Mapping) else "{…}"
    if expected.startswith("one of "):  # a choice: say which word was not understood
        where = f" at {path}" if path not in ("", name) else ""
        return DiffbalanceError(f"unknown {what or name} {shown}{where}", f"use {expected}")
    return DiffbalanceError(f"{path}={shown} is not {expected}", f"give {name} as {expected}")


def _what(cls: type, name: str) -> str | None:
    return next((f.metadata.get("what") for f in dataclasses.fields(cls) if f.name == name), None)


def hints(cls: type) -> dict[str, Any]:
    """Field name → resolved annotation, for the dataclass fields of `cls` that __init__ takes."""
    resolved = typing.get_type_hints(cls)
    return {f.name: resolved[f.name] for f in dataclasses.fields(cls) if f.init}


def parse_fields(cls: type, d: Any, path: str, noun: str = "option") -> dict[str, Any]:
    """Keyword arguments for dataclass `cls` from mapping `d`: unknown keys and wrong types are one-line errors
    (`noun` names a key in them: "option", or "parameter" for a rebalancer)."""
    if not isinstance(d, Mapping):
        raise DiffbalanceError(f"{path or 'the config'} must be a mapping, got {type(d).__name__}",
                               "write it as key: value pairs")
    fields = hints(cls)
    unknown = [k for k in d if k not in fields]
    if unknown and noun == "parameter":
        raise DiffbalanceError(f"{path} has no parameter {', '.join(map(str, unknown))}",
                               f"use only {', '.join(sorted(fields))}")
    if unknown:
        raise DiffbalanceError(f"unknown {path or 'top level'} key(s) {', '.join(map(str, unknown))}",
                               f"use only {', '.join(sorted(fields))}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in d]
    if missing:
        raise DiffbalanceError(f"{path or 'the config'} lacks {', '.join(missing)}", f"add {missing[0]}: …")
    out = {}
    for key, value in d.items():
        try:
            out[key] = parse_value(fields[key], value, join(path, key))
        except _Mismatch as err:
            where, bad = (err.path, err.value) if err.path else (join(path, key), value)
            raise _field_error(where, bad, err.expected, _what(cls, key)) from None
    return out


def coerce_fields(obj: Any) -> None:
    """Check and convert every field of dataclass instance `obj` in place (run from `__post_init__`)."""
    for name, tp in hints(type(obj)).items():
        value = getattr(obj, name)
        try:
            new = parse_value(tp, value, current_path(name))
        except _Mismatch as err:
            where, bad = (err.path, err.value) if err.path else (current_path(name), value)
            raise _field_error(where, bad, err.expected, _what(type(obj), name)) from None
        if new is not value:
            object.__setattr__(obj, name, new)


def build(cls: type, d: Any, path: str = "") -> Any:
    """`cls(**d)` for a dataclass `cls`, with every message naming `path`."""
    kwargs = parse_fields(cls, d, path)
    with at_path(path):
        return cls(**kwargs)


def require(ok: bool, name: str, value: Any, expected: str) -> None:
    """A one-line error unless `ok`: `<path>.<name>=<value> is invalid — fix: <name> must be <expected>`."""
    if not ok:
        raise DiffbalanceError(f"{current_path(name)}={value!r} is invalid", f"{name} must be {expected}")


def to_plain(value: Any) -> Any:
    """JSON-able data: sections as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config section: typed fields with one comment each, checked on construction."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        self.validate()

    def validate(self) -> None:
        """Range and consistency checks of a section (types and choices are already checked)."""

    def require(self, ok: bool, name: str, expected: str) -> None:
        require(ok, name, getattr(self, name), expected)

    @classmethod
    def from_dict(cls, d: Any, path: str = ""):
        """From a YAML/JSON mapping (or an instance, returned as is); errors name the key path under `path`."""
        if isinstance(d, cls):
            return d
        return build(cls, d, path)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)
