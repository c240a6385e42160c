"""What every frozen config dataclass does when built from a YAML/JSON section: unknown keys are an error."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from diffbalance.errors import DiffbalanceError


def checked_fields(cls, d: Any, what: str) -> dict[str, Any]:
    """`d` as a dict, after checking that it is a mapping whose keys are all fields of dataclass `cls`.

    `what` names one key in messages, e.g. "classifier option" → "unknown classifier option(s) lr_max".
    """
    if not isinstance(d, Mapping):
        raise DiffbalanceError(f"{what}s must be a mapping, got {type(d).__name__}", "write them as key: value pairs")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise DiffbalanceError(f"unknown {what}(s) {', '.join(unknown)}", f"use only {', '.join(sorted(known))}")
    return dict(d)


def check_choice(what: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """One-line error unless `value` is one of `choices` (e.g. check_choice("classifier option", "loss", v, LOSSES))."""
    if value not in choices:
        raise DiffbalanceError(f"{what} {name}={value!r} is unknown", f"use one of {', '.join(choices)}")


def check_value(ok: bool, what: str, name: str, value: Any, expected: str) -> None:
    """One-line error unless `ok`; `expected` says what a valid value is (e.g. "a positive integer")."""
    if not ok:
        raise DiffbalanceError(f"{what} {name}={value!r} is invalid", f"{name} must be {expected}")
