"""Rebalancers by name. The built-in ones are imported here; generative ones (diffusers, transformers) on first use,
so `import diffbalance` stays fast."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from diffbalance.infra.configs import parse_fields
from diffbalance.infra.errors import DiffbalanceError, DiffbalanceTypeError
from diffbalance.rebalance import mixing, oversample  # noqa: F401  (their classes register themselves)
from diffbalance.rebalance.base import REGISTRY, Rebalancer

GENERATIVE_MODULES = {
    "cfg": "diffbalance.generate.cfg.rebalancer",
    "ldm": "diffbalance.generate.text2image.rebalancer",
    "ldm-img2img": "diffbalance.generate.text2image.rebalancer",
}


def available_rebalancers() -> list[str]:
    return sorted(set(REGISTRY) | set(GENERATIVE_MODULES))


def rebalancer_class(name: str) -> type[Rebalancer]:
    if name not in REGISTRY and name in GENERATIVE_MODULES:
        importlib.import_module(GENERATIVE_MODULES[name])
    if name not in REGISTRY:
        raise DiffbalanceError(f"unknown rebalancer {name!r}", f"use one of {', '.join(available_rebalancers())}")
    return REGISTRY[name]


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
