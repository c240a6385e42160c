"""Image sets larger than memory: decoded pixels written once to disk, read lazily by index.

A store is one folder (written by `data.store_build`):

    images.npy     (capacity, C, H, W) uint8 — a plain NumPy array file (`np.load(path, mmap_mode="r")` reads it
                   without diffbalance); allocated in full when the build starts, so a disk too small fails then,
                   before any image is decoded
    progress.json  how many rows are finished; a chunk is flushed to disk before it is counted, so a build killed
                   at any moment resumes at the first unfinished chunk
    labels.npy     (count,) int64, written when the build completes
    store.json     written last: count, class names, source, meta and the key it was built for; its presence marks
                   a complete store

Why a raw array: the images of a set share one shape (`data.decode.one_size`), so image i is one contiguous block at
a fixed offset. A random training batch is B positioned reads with nothing to decode or parse, a scan (FID) is one
sequential read, and the OS page cache — not the process — holds what is hot. WebDataset's tar shards serve scans
but not random access; Arrow frames every row and, for images, adds a decode or a copy.

`StoredImages` is what `ImageSet.images` holds for such a set: `len`, `shape`, `dtype`, and indexing (an int, a
slice, index tensors or lists, a boolean mask) that reads exactly the rows asked for with `os.preadv` into a fresh
tensor — the process's memory grows with the batch, never with the set. `take` and `concat` make index views
without reading (an imbalanced cut or a validation split is an index list); a view may join in-memory tensors
(a small fill) to on-disk arrays. It pickles as paths and indices, so DataLoader workers open their own files.
Which sets go to disk: `use_store` (automatic above a quarter of the machine's memory; $DIFFBALANCE_STORE).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffbalance.infra.errors import DiffbalanceError

STORE_FORMAT = 1
IMAGES, LABELS, PROGRESS, INFO = "images.npy", "labels.npy", "progress.json", "store.json"


@dataclass(frozen=True)
class DiskArray:
    """Rows of one store's images.npy: `path`, the data's byte `offset` after the .npy header, the row shape."""

    path: str
    offset: int
    shape: tuple[int, int, int]

    @property
    def row_bytes(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def read(self, rows: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(rows), *self.shape), dtype=torch.uint8)
        buffer = out.numpy().reshape(len(rows), -1)
        fd = _descriptor(self.path)
        for start, stop, first in _runs(rows):  # consecutive rows in one read each
            view = memoryview(buffer[start:stop]).cast("B")
            got = os.preadv(fd, [view], self.offset + int(first) * self.row_bytes)
            if got != len(view):
                raise DiffbalanceError(f"the image store {Path(self.path).parent} is cut short (row {first})",
                                       "delete the store folder; it is rebuilt on the next read")
        return out


_FDS: dict[tuple[int, str], int] = {}  # (process id, path) → descriptor: a forked worker opens its own


def _descriptor(path: str) -> int:
    key = (os.getpid(), path)
    if key not in _FDS:
        _FDS[key] = os.open(path, os.O_RDONLY)
    return _FDS[key]


def _runs(rows: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(start, stop, first row) of each run of consecutive rows in `rows`, in order."""
    if len(rows) == 0:
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(rows)]])
    for a, b in zip(starts.tolist(), stops.tolist()):
        yield a, b, int(rows[a])


class StoredImages:
    """(N, C, H, W) uint8 images read from disk on demand (module docstring). Parts are on-disk arrays or in-memory
    tensors; `index` (N, 2) int64 says, per image, which part and which row of it."""

    dtype = torch.uint8
    device = torch.device("cpu")
    ndim = 4

    def __init__(self, parts: tuple[DiskArray | torch.Tensor, ...], index: np.ndarray):
        shapes = {tuple(p.shape) if isinstance(p, DiskArray) else tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise DiffbalanceError(f"cannot join images of shapes {sorted(shapes)}", "resize them to one size first")
        self.parts = parts
        self.index = index
        self.image_shape: tuple[int, int, int] = shapes.pop()

    @classmethod
    def of(cls, images: torch.Tensor | StoredImages) -> StoredImages:
        """`images` as a view: itself, or an in-memory tensor as a one-part view."""
        if isinstance(images, StoredImages):
            return images
        index = np.stack([np.zeros(len(images), np.int64), np.arange(len(images), dtype=np.int64)], 1)
        return cls((images,), index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.image_shape))

    @property
    def nbytes(self) -> int:
        return len(self.index) * int(np.prod(self.image_shape))

    def __len__(self) -> int:
        return len(self.index)

    def take(self, positions) -> StoredImages:
        """A view of the images at `positions` (anything `__getitem__` takes), nothing read."""
        return StoredImages(self.parts, self.index[_positions(positions, len(self))])

    def concat(self, other: torch.Tensor | StoredImages) -> StoredImages:
        other = StoredImages.of(other)
        shifted = other.index.copy()
        shifted[:, 0] += len(self.parts)
        return StoredImages(self.parts + other.parts, np.concatenate([self.index, shifted]))

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return self.read(_positions([int(key)], len(self)))[0]
        if isinstance(key, tuple):
            raise TypeError("index stored images by image only (then index the tensor that comes back)")
        return self.read(_positions(key, len(self)))

    def read(self, positions: np.ndarray) -> torch.Tensor:
        """(len(positions), C, H, W) uint8, in the order asked, each part read once."""
        out = torch.empty((len(positions), *self.image_shape), dtype=torch.uint8)
        chosen = self.index[positions]
        for part_id in np.unique(chosen[:, 0]).tolist():
            where = np.flatnonzero(chosen[:, 0] == part_id)
            rows = chosen[where, 1]
            part = self.parts[part_id]
            if isinstance(part, torch.Tensor):
                out[torch.from_numpy(where)] = part[torch.from_numpy(rows)]
                continue
            order = np.argsort(rows, kind="stable")  # read in file order (runs coalesce), put back where asked
            out[torch.from_numpy(where[order])] = part.read(rows[order])
        return out

    def to(self, device, non_blocking: bool = False) -> torch.Tensor:
        """Every image in memory, on `device` — only for sets small enough (callers that stream read batches)."""
        return self[:].to(device, non_blocking=non_blocking)

    def __array__(self, dtype=None, copy=None):
        array = self[:].numpy()
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        disk = sum(isinstance(p, DiskArray) for p in self.parts)
        return f"StoredImages({tuple(self.shape)}, {disk} on-disk part(s), {len(self.parts) - disk} in memory)"


def _positions(key, n: int) -> np.ndarray:
    """Positions 0..n-1 (int64) from a slice, ints, an index tensor/array/list, or a boolean mask of length n."""
    if isinstance(key, slice):
        return np.arange(n, dtype=np.int64)[key]
    if isinstance(key, torch.Tensor):
        key = key.detach().cpu().numpy()
    array = np.asarray(key)
    if array.dtype == bool:
        if array.shape != (n,):
            raise IndexError(f"a boolean mask of {array.shape} for {n} images")
        return np.flatnonzero(array)
    array = array.astype(np.int64, copy=False).reshape(-1)
    if array.size and (array.min() < -n or array.max() >= n):
        raise IndexError(f"index out of range for {n} images")
    return np.where(array < 0, array + n, array)


def is_stored(images) -> bool:
    return isinstance(images, StoredImages)


def pixel_chunks(images, chunk: int = 4096) -> Iterator[np.ndarray]:
    """The images' uint8 bytes in order, `chunk` images at a time, as contiguous (n, C·H·W) arrays: views of an
    in-memory tensor (no copy when it is contiguous), reads of a stored one — for hashing without holding the set."""
    if not isinstance(images, StoredImages):
        flat = images.detach().cpu().contiguous().numpy().reshape(len(images), -1)
        for start in range(0, len(images), chunk):
            yield flat[start:start + chunk]
        return
    for start in range(0, len(images), chunk):
        yield images[start:start + chunk].numpy().reshape(-1, int(np.prod(images.image_shape)))


STORE_ENV, ABOVE_ENV = "DIFFBALANCE_STORE", "DIFFBALANCE_STORE_ABOVE"


def store_above() -> int:
    """Decoded bytes above which a set goes to disk: $DIFFBALANCE_STORE_ABOVE, else a quarter of the memory."""
    if os.environ.get(ABOVE_ENV, "").strip():
        return int(float(os.environ[ABOVE_ENV]))
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def use_store(nbytes: int) -> bool:
    """Whether a set of `nbytes` decoded pixels is kept on disk: $DIFFBALANCE_STORE memory | disk, or auto (above
    `store_above()`)."""
    mode = os.environ.get(STORE_ENV, "auto").strip() or "auto"
    if mode not in ("auto", "memory", "disk"):
        raise DiffbalanceError(f"{STORE_ENV}={mode!r} is not auto, memory or disk", f"unset {STORE_ENV} or use one of those")
    return mode == "disk" or (mode == "auto" and nbytes > store_above())
