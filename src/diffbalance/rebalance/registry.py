"""Rebalancers by name (`rebalance.base.REBALANCERS`): the built-ins are found and imported on the first lookup, so
`import diffbalance` stays fast; a generative method imports diffusers only when it trains or loads a model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffbalance.infra.configs import parse_fields
from diffbalance.infra.errors import DiffbalanceTypeError
from diffbalance.rebalance.base import REBALANCERS, Rebalancer


def available_rebalancers() -> list[str]:
    return REBALANCERS.available()


def generative_rebalancers() -> list[str]:
    return REBALANCERS.select(generative=True)


def sweep_knobs(name: str) -> tuple[str, ...]:
    """The knobs experiment.sweep may choose for rebalancer `name` (its entry's `sweep_knobs`; () when none)."""
    return tuple(REBALANCERS.entry(name).get("sweep_knobs", ()))


def sweepable_rebalancers() -> list[str]:
    """Rebalancers whose knobs experiment.sweep can choose (they declare `sweep_knobs`)."""
    return [name for name in available_rebalancers() if sweep_knobs(name)]


def rebalancer_class(name: str) -> type[Rebalancer]:
    return REBALANCERS.get(name)


def build_rebalancer(name: str, params: Mapping[str, Any] | None = None, path: str = "", **kwargs: Any) -> Rebalancer:
    """A registered rebalancer from its parameters (a mapping and/or keywords). Unknown parameters, wrong types and
    bad values are one-line errors naming `path` (e.g. "methods[3].params.guidance_w"), raised here: a config is
    checked before any work starts (the rebalancer's own check, `_validate_params`, which its fit runs again)."""
    cls = rebalancer_class(name)
    where = path or f"rebalancer {name}"
    if params is not None and not isinstance(params, Mapping):
        raise DiffbalanceTypeError(f"{where}: params must be a mapping, got {type(params).__name__}",
                                   "pass params as a dict, e.g. {'alpha': 0.6}")
    reb = cls(**parse_fields(cls, {**dict(params or {}), **kwargs}, where, noun="parameter"))
    reb._validate_params(where)
    return reb
