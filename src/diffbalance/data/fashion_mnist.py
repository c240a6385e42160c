"""Fashion-MNIST from its four IDX files (gzipped or not), parsed with numpy.

Search order when no folder is given: `$DIFFBALANCE_FASHION_MNIST`, `/usr/share/datasets/fashion-mnist`
(Debian's `dataset-fashion-mnist`), a previous download in the cache, then torchvision's download if allowed.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.data.registry import register_source
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import cache_dir

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_ENV = "DIFFBALANCE_FASHION_MNIST"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_INSTALL_FIX = (
    f"run `apt-get install dataset-fashion-mnist`, or set {FASHION_MNIST_ENV} to a folder with the four IDX files"
)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array (magic 0x0000_08_ndim, big-endian uint32 dims, then the bytes), validated."""
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DiffbalanceError(f"IDX file {path} is truncated ({len(raw)} bytes)", _INSTALL_FIX)
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 | ndim:
        raise DiffbalanceError(
            f"IDX file {path} has magic number {magic:#010x}, expected {0x0800 | ndim:#010x}", _INSTALL_FIX
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DiffbalanceError(
            f"IDX file {path} holds {len(raw)} bytes, its header {dims} says {expected}", _INSTALL_FIX
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DiffbalanceError(f"cannot read {path} ({err})", _INSTALL_FIX) from None


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz` in `folder` (plain first: no decompression)."""
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def has_fashion_mnist(folder: Path) -> bool:
    return all(find_idx_file(Path(folder), stem) for pair in IDX_FILES.values() for stem in pair)


def load_split(folder: Path, split: str) -> ImageSet:
    """One split ("train" or "test") as uint8 (N, 1, 28, 28) with labels 0..9."""
    image_stem, label_stem = IDX_FILES[split]
    paths = [find_idx_file(folder, image_stem), find_idx_file(folder, label_stem)]
    if None in paths:
        raise DiffbalanceError(f"{folder} lacks {image_stem}[.gz] or {label_stem}[.gz]", _INSTALL_FIX)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if len(images) != len(labels):
        raise DiffbalanceError(
            f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels", _INSTALL_FIX
        )
    if images.shape[1:] != (28, 28):
        raise DiffbalanceError(
            f"{paths[0]} holds {images.shape[1:]} images, Fashion-MNIST's are (28, 28)", _INSTALL_FIX
        )
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DiffbalanceError(f"{paths[1]} has label {int(labels.max())}, expected 0..9", _INSTALL_FIX)
    x = torch.from_numpy(images.copy())[:, None]  # (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageSet(x, y, FASHION_MNIST_CLASSES, f"fashion-mnist:{split} ({folder})", {"dataset": "fashion-mnist"})


def load_fashion_mnist(folder: Path) -> tuple[ImageSet, ImageSet]:
    """(train, test) from a folder holding the four IDX files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DiffbalanceError(f"Fashion-MNIST folder {folder} does not exist", _INSTALL_FIX)
    return load_split(folder, "train"), load_split(folder, "test")


def download_fashion_mnist(cache_root: Path) -> Path:
    """Download with torchvision into `cache_root/torchvision`; returns the folder with the IDX files."""
    from torchvision.datasets import FashionMNIST

    root = Path(cache_root) / "torchvision"
    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DiffbalanceError(
            f"Fashion-MNIST was not found locally and the download failed ({err})", _INSTALL_FIX
        ) from None
    return root / "FashionMNIST" / "raw"


def resolve_fashion_mnist(root: str | None, download: bool, cache_root: Path) -> Path:
    """The folder to read, following the search order in the module docstring."""
    if root is not None:
        if not has_fashion_mnist(Path(root)):
            raise DiffbalanceError(f"no Fashion-MNIST IDX files in {root}", _INSTALL_FIX)
        return Path(root)
    env = os.environ.get(FASHION_MNIST_ENV)
    if env:
        if not has_fashion_mnist(Path(env)):
            raise DiffbalanceError(f"{FASHION_MNIST_ENV}={env} holds no Fashion-MNIST IDX files", _INSTALL_FIX)
        return Path(env)
    downloaded = Path(cache_root) / "torchvision" / "FashionMNIST" / "raw"
    for candidate in (SYSTEM_DIR, downloaded):
        if has_fashion_mnist(candidate):
            return candidate
    if not download:
        raise DiffbalanceError("Fashion-MNIST not found and downloads are off", _INSTALL_FIX)
    return download_fashion_mnist(cache_root)


@register_source("fashion-mnist", help=f"Fashion-MNIST, 28×28 grey, 10 classes (IDX files in root, "
                                       f"${FASHION_MNIST_ENV}, {SYSTEM_DIR} or a download)")
def load_fashion_mnist_source(config) -> tuple[ImageSet, ImageSet]:
    """(train, test) for a DataConfig: `root`, else the search order in the module docstring."""
    return load_fashion_mnist(resolve_fashion_mnist(config.root, config.download, cache_dir()))
