"""Decoded image sets cached on disk, so a large folder of JPEGs/PNGs is decoded once.

A cache entry is a folder `cache_dir("sets", <key>)` (`diffbalance.infra.paths`: $DIFFBALANCE_CACHE/sets/<key>, default
~/.cache/diffbalance/sets/<key>) holding `sets.safetensors` (images_i, labels_i per set) and
`sets.json` (class names, source, meta per set). The key is a sha256 of the loader name, the resolved input
paths, every input file with its size and mtime, and the loader options: change any of them and the entry is
rebuilt. Entries are written atomically; one that fails to load is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.atomic import atomic_path
from diffbalance.infra.paths import CACHE_ENV, cache_dir

CACHE_FORMAT = 2  # bump when the stored layout or the decoding changes (2: 16-bit scaling, EXIF, alpha rule)


def file_listing(root: Path) -> list[tuple[str, int, int]]:
    """(relative path, size in bytes, mtime in ns) of every file under `root` (or of `root` itself), sorted."""
    root = Path(root)
    if root.is_file():
        st = root.stat()
        return [(root.name, st.st_size, st.st_mtime_ns)]
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # skip temp/hidden folders
        for name in filenames:
            path = Path(dirpath, name)
            st = path.stat()
            rows.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(rows)


def cache_key(loader: str, roots: Iterable[Path | None], options: dict[str, Any]) -> str:
    """sha256 over (loader, resolved roots, their file listings, options); `None` roots are kept as a marker."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "loader": loader, "options": options}, sort_keys=True).encode())
    for root in roots:
        if root is None:
            h.update(b"\0none\0")
            continue
        resolved = Path(root).resolve()
        h.update(f"\0root:{resolved}\0".encode())
        for rel, size, mtime_ns in file_listing(resolved):
            h.update(f"{rel}\t{size}\t{mtime_ns}\n".encode())
    return h.hexdigest()


def save_sets(folder: Path, key: str, sets: tuple[ImageSet, ...]) -> None:
    """Write `sets` to `folder` atomically (the folder appears complete or not at all)."""
    tensors, records = {}, []
    for i, data in enumerate(sets):
        tensors[f"images_{i}"] = data.images.contiguous()
        tensors[f"labels_{i}"] = data.labels.contiguous()
        records.append({"class_names": list(data.class_names), "source": data.source, "meta": data.meta})
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "sets.safetensors"))
        (tmp / "sets.json").write_text(json.dumps({"key": key, "sets": records}, default=str) + "\n")


def load_sets(folder: Path, key: str) -> tuple[ImageSet, ...]:
    """Read sets written by `save_sets`; raises (any exception) on a missing, stale or damaged entry."""
    info = json.loads((folder / "sets.json").read_text())
    if info["key"] != key:
        raise ValueError("cache key mismatch")
    tensors = load_file(str(folder / "sets.safetensors"))
    return tuple(
        ImageSet(tensors[f"images_{i}"], tensors[f"labels_{i}"], tuple(r["class_names"]), r["source"], r["meta"])
        for i, r in enumerate(info["sets"])
    )


def cached_sets(
    key: str, build: Callable[[], tuple[ImageSet, ...]], enabled: bool = True, root: Path | None = None
) -> tuple[ImageSet, ...]:
    """Return the cached sets for `key`, or `build()` them and store them.

    Each returned set has `meta["cache"] = {"key": ..., "hit": bool}`. A cache that cannot be written
    (read-only disk, full disk) only costs a warning.
    """
    if not enabled:
        return build()
    folder = Path(root) / "sets" / key if root is not None else cache_dir("sets", key)
    if folder.is_dir():
        try:
            sets = load_sets(folder, key)
            return _tag(sets, key, hit=True)
        except Exception:  # a damaged or partial entry is rebuilt, never trusted
            pass
    sets = build()
    try:
        save_sets(folder, key, sets)
    except OSError as err:
        warnings.warn(f"could not write the data cache at {folder} ({err}); set {CACHE_ENV} to a writable folder")
    return _tag(sets, key, hit=False)


def _tag(sets: tuple[ImageSet, ...], key: str, hit: bool) -> tuple[ImageSet, ...]:
    for data in sets:
        data.meta["cache"] = {"key": key, "hit": hit}
    return sets
