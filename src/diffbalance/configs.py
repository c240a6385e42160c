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
