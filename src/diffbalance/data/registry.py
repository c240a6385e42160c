"""Data sources by name: each one registers itself in its own module with `@register_source`.

A source is a function `load(config) -> (train, test)` that reads a `DataConfig` (data.sources) into two uint8
ImageSets, a one-line `help` (shown by every command that takes a dataset), and optionally a `check(config)` that
raises a one-line DiffbalanceError for options the source cannot use (run when the DataConfig is built).

Adding a source is one module with one `@register_source` and one import line in `data.sources`, which imports the
built-in sources and looks them up (`available_sources`, `source`):

    @register_source("toy", help="ten flat 8×8 images per class (a demo)")
    def load_toy(config):
        return train, test
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffbalance.data.imageset import ImageSet

Loader = Callable[[Any], tuple[ImageSet, ImageSet]]  # DataConfig → (train, test)
Check = Callable[[Any], None]  # DataConfig → None, or a one-line DiffbalanceError


@dataclass(frozen=True)
class Source:
    name: str  # what `DataConfig.name`, `--dataset` and `NAME:SPLIT` specs say
    help: str  # one line: what the source is and where its files are found
    load: Loader  # DataConfig → (train, test) uint8 ImageSets
    check: Check | None = None  # the source's own option checks, run by DataConfig.validate
    # image-set specs (`diffbalance fid`, `rebalance`): NAME:SPLIT, or NAME:ROOT[:SPLIT] for a source located by
    # its root (hf); `load_split(config, split)` reads one split whole (None: the train/test of `load`)
    load_split: Callable[[Any, str], ImageSet] | None = None
    root_in_spec: bool = False


SOURCES: dict[str, Source] = {}  # filled by @register_source as the modules are imported


def register_source(name: str, help: str, check: Check | None = None,
                    load_split: Callable[[Any, str], ImageSet] | None = None,
                    root_in_spec: bool = False) -> Callable[[Loader], Loader]:
    """Register the decorated `load(config) -> (train, test)` as data source `name`; returns it unchanged."""
    if "\n" in help:
        raise ValueError(f"the help of data source {name!r} must be one line")

    def register(load: Loader) -> Loader:
        taken = SOURCES.get(name)
        if taken is not None and _where(taken.load) != _where(load):  # the same function imported again is fine
            raise ValueError(f"data source {name!r} is registered twice ({_where(taken.load)}, {_where(load)})")
        SOURCES[name] = Source(name, help, load, check, load_split, root_in_spec)
        return load

    return register


def _where(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"
