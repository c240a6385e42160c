"""Building and opening an on-disk image store (the layout and the reading side: `data.store`): `StoreWriter`
writes a set chunk by chunk and resumes a killed build, `open_store` gives a complete store back as an ImageSet whose
images are read by index."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.data.store import IMAGES, INFO, LABELS, PROGRESS, STORE_FORMAT, DiskArray, StoredImages
from diffbalance.infra.atomic import DiskFullError, full_reason, write_json

SPARE_BYTES = 2**30  # room a store leaves free on its disk


class StoreWriter:
    """Writes a store chunk by chunk: `append(images, labels)` then `finish(...)`; resumes where a killed build
    stopped (`done` rows are already there). Allocates the whole array first: a full disk is a `DiskFullError`
    line before anything is decoded, and the folder stays resumable."""

    def __init__(self, folder: Path, capacity: int, image_shape: tuple[int, int, int], key: str):
        self.folder, self.capacity, self.image_shape, self.key = Path(folder), capacity, tuple(image_shape), key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done, self.labels, self.state = self._resume_point()
        path = self.folder / IMAGES
        need, free = capacity * int(np.prod(self.image_shape)), shutil.disk_usage(self.folder).free
        if self.done == 0 and need > free - SPARE_BYTES:  # never fill the disk: one line before anything is written
            raise DiskFullError(path, f"not enough room for an image store of {need / 1e9:.1f} GB "
                                      f"({free / 1e9:.1f} GB free)")
        try:
            if self.done == 0:
                array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                                  shape=(capacity, *self.image_shape))
                offset = array.offset
                del array
                _allocate(path)
            else:
                offset = np.load(path, mmap_mode="r").offset
        except OSError as err:
            if full_reason(err) is not None:
                raise DiskFullError(path, full_reason(err)) from None
            raise
        self.array = DiskArray(str(path), int(offset), self.image_shape)

    def _resume_point(self) -> tuple[int, list[int], dict]:
        try:
            progress = json.loads((self.folder / PROGRESS).read_text())
            same = (progress["key"] == self.key and progress["capacity"] == self.capacity
                    and tuple(progress["shape"]) == self.image_shape and (self.folder / IMAGES).is_file())
            if same:
                return int(progress["done"]), list(progress["labels"]), dict(progress.get("state", {}))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return 0, [], {}

    def append(self, images: torch.Tensor, labels: list[int], state: dict | None = None) -> None:
        """Rows done … done + len(images), flushed to disk, then counted together with the caller's `state` (what a
        resumed build needs besides the rows, e.g. how many files were read and which were unreadable)."""
        if state is not None:
            self.state = state
        if self.done + len(images) > self.capacity:
            raise ValueError(f"store of {self.capacity} rows overfilled")
        data = images.contiguous().numpy().reshape(-1)
        fd = os.open(self.array.path, os.O_WRONLY)
        try:
            view, at = memoryview(data).cast("B"), self.array.offset + self.done * self.array.row_bytes
            while len(view):  # pwrite may write less than asked
                written = os.pwrite(fd, view, at)
                view, at = view[written:], at + written
            os.fsync(fd)
        except OSError as err:
            if full_reason(err) is not None:
                raise DiskFullError(Path(self.array.path), full_reason(err)) from None
            raise
        finally:
            os.close(fd)
        self.done += len(images)
        self.labels += [int(v) for v in labels]
        write_json(self.folder / PROGRESS, {"key": self.key, "capacity": self.capacity, "shape": self.image_shape,
                                            "done": self.done, "labels": self.labels, "state": self.state})

    def finish(self, class_names: tuple[str, ...], source: str, meta: dict) -> None:
        np.save(self.folder / LABELS, np.asarray(self.labels, dtype=np.int64))
        write_json(self.folder / INFO, {"format": STORE_FORMAT, "key": self.key, "count": self.done,
                                        "shape": self.image_shape, "class_names": list(class_names),
                                        "source": source, "meta": meta})
        (self.folder / PROGRESS).unlink(missing_ok=True)


def _allocate(path: Path) -> None:
    """Reserve the file's blocks now (a sparse file would fail mid-build on a full disk)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if full_reason(err) is not None:
            raise
        # a file system without fallocate (EOPNOTSUPP): the writes themselves then report a full disk
    finally:
        os.close(fd)


def open_store(folder: Path | str, key: str | None = None):
    """The ImageSet of a complete store (images read lazily); raises on a missing, stale or incomplete one."""
    folder = Path(folder)
    info = json.loads((folder / INFO).read_text())
    if info.get("format") != STORE_FORMAT or (key is not None and info["key"] != key):
        raise ValueError("stale image store")
    labels = torch.from_numpy(np.load(folder / LABELS))
    offset = np.load(folder / IMAGES, mmap_mode="r").offset
    count = int(info["count"])
    array = DiskArray(str((folder / IMAGES).resolve()), int(offset), tuple(info["shape"]))
    index = np.stack([np.zeros(count, np.int64), np.arange(count, dtype=np.int64)], 1)
    return ImageSet(StoredImages((array,), index), labels, tuple(info["class_names"]), info["source"],
                    {**info["meta"], "store": str(folder)})


def write_store(folder: Path | str, data, key: str = "", chunk: int = 1024) -> None:
    """An ImageSet (in memory or stored) written as a store at `folder` (resumable, see StoreWriter)."""
    writer = StoreWriter(Path(folder), len(data), tuple(data.images.shape[1:]), key)
    for start in range(writer.done, len(data), chunk):
        stop = min(start + chunk, len(data))
        writer.append(data.images[start:stop], data.labels[start:stop].tolist())
    writer.finish(data.class_names, data.source, data.meta)
