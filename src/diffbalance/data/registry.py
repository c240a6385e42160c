"""Data sources by name (`infra.registry`): each one registers itself in its own module with `@register_source`.

A source is a function `load(config) -> (train, test)` that reads a `DataConfig` (data.sources) into two uint8
ImageSets, with a one-line `help` (shown by every command that takes a dataset) and, as metadata, optionally:
- `check(config)`: raises a one-line DiffbalanceError for options the source cannot use (run when the DataConfig
  is built);
- `load_split(config, split)`: one split read whole, for image-set specs (`diffbalance fid`, `rebalance`);
- `root_in_spec`: the spec names the source's root, NAME:ROOT[:SPLIT] (hf).

Every module of `diffbalance.data` is searched on the first lookup, so a built-in source is one module here with one
`@register_source`; a source from outside the package is the same decorator in a module imported before the lookup
(tests/plugin_source.py):

    @register_source("toy", help="ten flat 8×8 images per class (a demo)")
    def load_toy(config):
        return train, test
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.registry import Registry

Loader = Callable[[Any], tuple[ImageSet, ImageSet]]  # DataConfig → (train, test)
Check = Callable[[Any], None]  # DataConfig → None, or a one-line DiffbalanceError

SOURCES: Registry[Loader] = Registry("dataset", discover=("diffbalance.data.*",), plugins="diffbalance.datasets")


def register_source(name: str, help: str, check: Check | None = None,
                    load_split: Callable[[Any, str], ImageSet] | None = None,
                    root_in_spec: bool = False) -> Callable[[Loader], Loader]:
    """Register the decorated `load(config) -> (train, test)` as data source `name`; returns it unchanged."""
    return SOURCES.register(name, help=help, check=check, load_split=load_split, root_in_spec=root_in_spec)
