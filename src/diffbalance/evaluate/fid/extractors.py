"""FID feature extractors by name (`infra.registry`): each kind registers its builder beside its class with
`@register_extractor`.

A builder is `build(cfg, device, domain_model) -> FeatureExtractor`: `cfg` the FidConfig (weights, resize, batch
size), `device` a resolved torch.device, `domain_model` the classifier whose features a kind with
`needs_classifier` uses (None for the others). The built-in kinds live in `evaluate.fid.features`, imported on the
first lookup (`available_extractors`, `extractor_kind` in evaluate.fid.protocol); a kind from elsewhere is one
`@register_extractor` in a module imported before the lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffbalance.infra.registry import Registry

Builder = Callable[..., Any]  # (FidConfig, torch.device, domain_model | None) → FeatureExtractor

EXTRACTORS: Registry[Builder] = Registry("features", modules=("diffbalance.evaluate.fid.features",),
                                          plugins="diffbalance.features")


def register_extractor(name: str, help: str, needs_classifier: bool = False) -> Callable[[Builder], Builder]:
    """Register the decorated builder as feature kind `name`; returns it unchanged. `needs_classifier`: built from
    a trained classifier (`domain_model`), e.g. domain-FID."""
    return EXTRACTORS.register(name, help=help, needs_classifier=needs_classifier)
