"""FID feature extractors by name: each kind registers its builder beside its class with `@register_extractor`.

A builder is `build(cfg, device, domain_model) -> FeatureExtractor`: `cfg` the FidConfig (weights, resize, batch
size), `device` a resolved torch.device, `domain_model` the classifier whose features a kind with
`needs_classifier` uses (None for the others). `evaluate.fid.protocol` imports the built-in kinds and looks them up
(`available_extractors`, `extractor_kind`); adding one is a builder with one `@register_extractor` in a module that
protocol imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Builder = Callable[..., Any]  # (FidConfig, torch.device, domain_model | None) → FeatureExtractor


@dataclass(frozen=True)
class ExtractorKind:
    name: str  # what `FidConfig.features` and `diffbalance fid --features` say
    help: str  # one line: what the features are and what they are for
    build: Builder  # (cfg, device, domain_model) → FeatureExtractor
    needs_classifier: bool = False  # built from a trained classifier (`domain_model`), e.g. domain-FID


EXTRACTORS: dict[str, ExtractorKind] = {}  # filled by @register_extractor as the modules are imported


def register_extractor(name: str, help: str, needs_classifier: bool = False) -> Callable[[Builder], Builder]:
    """Register the decorated builder as feature kind `name`; returns it unchanged."""
    if "\n" in help:
        raise ValueError(f"the help of feature kind {name!r} must be one line")

    def register(build: Builder) -> Builder:
        taken = EXTRACTORS.get(name)
        if taken is not None and _where(taken.build) != _where(build):  # the same function imported again is fine
            raise ValueError(f"feature kind {name!r} is registered twice ({_where(taken.build)}, {_where(build)})")
        EXTRACTORS[name] = ExtractorKind(name, help, build, needs_classifier)
        return build

    return register


def _where(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"
