"""CIFAR-10 train/test as ImageSets, from any of the layouts it is found in.

- torchvision's python batches (`cifar-10-batches-py/`), read by torchvision itself (lossless, original order);
  or downloaded by torchvision into the cache when allowed.
- the JPEG layout `train/<class>/NNNN.jpg`, `test/<class>/NNNN.jpg` (lossy, quality 75): class folders in CIFAR
  label order, files in file-name order, which is the original order within each class. Images come out grouped
  by class; "the first n of class c" is the same set of images as in torchvision's order.
- the tarball of that layout (`cifar10_jpeg_q75_yoongikim.tar.gz`), unpacked once into the cache.

Search order without an explicit folder: `$DIFFBALANCE_CIFAR10`, `../shared/data/cifar10-jpeg` (from the current
directory), `$DIFFBALANCE_SHARED/data/cifar10-jpeg`, an earlier torchvision download in the cache, a download.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np
import torch

from diffbalance.data.cache import cache_key, cached_sets
from diffbalance.data.image_folder import decode_images
from diffbalance.data.imageset import ImageSet
from diffbalance.data.registry import register_source
from diffbalance.infra.atomic import atomic_path
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import cache_dir, shared_paths

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_ENV = "DIFFBALANCE_CIFAR10"
BATCHES_DIR = "cifar-10-batches-py"
JPEG_TARBALL = "cifar10_jpeg_q75_yoongikim.tar.gz"
_FIX = f"pass --root / set {CIFAR10_ENV} to a folder with {BATCHES_DIR}/, train/ + test/ JPEG folders or {JPEG_TARBALL}"


def detect_layout(path: Path) -> tuple[str, Path] | None:
    """("batches", folder holding cifar-10-batches-py) | ("jpeg", folder with train/ and test/) | ("tarball", file)."""
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return "tarball", path
    if not path.is_dir():
        return None
    if (path / BATCHES_DIR / "data_batch_1").is_file():
        return "batches", path
    if path.name == BATCHES_DIR and (path / "data_batch_1").is_file():
        return "batches", path.parent
    if (path / "train" / CIFAR10_CLASSES[0]).is_dir() and (path / "test" / CIFAR10_CLASSES[0]).is_dir():
        return "jpeg", path
    if (path / JPEG_TARBALL).is_file():
        return "tarball", path / JPEG_TARBALL
    return None


def load_cifar10_batches(root: Path, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """Read (or download into `root`) the python batches with torchvision; no pickle is opened here."""
    from torchvision.datasets import CIFAR10

    sets = []
    for train in (True, False):
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except (OSError, RuntimeError) as err:  # torchvision: missing/corrupt files; URLError is an OSError
            raise DiffbalanceError(f"cannot read CIFAR-10 python batches under {root} ({err})", _FIX) from None
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        split = "train" if train else "test"
        meta = {"dataset": "cifar10", "format": "python-batches", "lossy": False, "order": "original"}
        sets.append(ImageSet(x, y, CIFAR10_CLASSES, f"cifar10:{split} ({Path(root) / BATCHES_DIR})", meta))
    return sets[0], sets[1]


def read_jpeg_split(folder: Path, split: str) -> ImageSet:
    """`folder/<split>/<class>/*.jpg` → ImageSet, class folders in CIFAR order, files in file-name order."""
    paths, labels = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        class_dir = folder / split / name
        files = sorted(class_dir.glob("*.jpg")) if class_dir.is_dir() else []
        if not files:
            raise DiffbalanceError(f"CIFAR-10 JPEG folder {class_dir} is missing or empty", _FIX)
        paths += files
        labels += [label] * len(files)
    images, bad = decode_images(paths, image_size=32, channels=3)
    if bad:
        raise DiffbalanceError(
            f"{len(bad)} unreadable CIFAR-10 JPEGs, first: {bad[0]}", "re-unpack or re-download them"
        )
    meta = {"dataset": "cifar10", "format": "jpeg-q75", "lossy": True, "order": "class-grouped"}
    x = torch.stack(images)  # (N, 3, 32, 32)
    return ImageSet(x, torch.tensor(labels, dtype=torch.int64), CIFAR10_CLASSES, f"cifar10:{split} ({folder})", meta)


def load_cifar10_jpeg(folder: Path, cache: bool = True, cache_root: Path | None = None) -> tuple[ImageSet, ImageSet]:
    """The JPEG layout, decoded once and then served from the cache."""
    folder = Path(folder)

    def build() -> tuple[ImageSet, ImageSet]:
        return read_jpeg_split(folder, "train"), read_jpeg_split(folder, "test")

    key = cache_key("cifar10-jpeg", [folder / "train", folder / "test"], {})
    train, test = cached_sets(key, build, enabled=cache, root=cache_root)
    return train, test


def unpack_tarball(tarball: Path, cache_root: Path) -> Path:
    """Unpack the JPEG tarball once into `cache_root/cifar10-jpeg/<id>/` (atomically); returns that folder."""
    st = Path(tarball).stat()
    ident = hashlib.sha256(f"{Path(tarball).resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = Path(cache_root) / "cifar10-jpeg" / ident
    if detect_layout(target) == ("jpeg", target):
        return target
    try:
        with atomic_path(target) as tmp, tarfile.open(tarball, "r|*") as archive:
            tmp.mkdir(parents=True)
            _extract_jpegs(archive, tmp)
    except (OSError, tarfile.TarError, EOFError) as err:
        raise DiffbalanceError(
            f"cannot unpack {tarball} ({err})",
            f"check the file (sha256 in PROVENANCE.md) and free disk space under {cache_root}",
        ) from None
    if detect_layout(target) != ("jpeg", target):
        raise DiffbalanceError(f"{tarball} does not hold train/<class>/ and test/<class>/ JPEG folders", _FIX)
    return target


def _extract_jpegs(archive: tarfile.TarFile, dest: Path) -> None:
    """Stream out the regular files train/<class>/<name> and test/<class>/<name>; nothing else, no links.

    Much faster than `extractall` on 60,000 small files (no per-file chmod/utime), and as safe: every name is
    checked to be exactly three plain parts under train/ or test/.
    """
    made: set[Path] = set()
    for member in archive:
        parts = member.name.removeprefix("./").split("/")
        if not member.isfile() or len(parts) != 3 or parts[0] not in ("train", "test") or {"", ".", ".."} & set(parts):
            continue
        path = dest.joinpath(*parts)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(archive.extractfile(member).read())


def search_paths() -> list[Path]:
    """Default places to look, in order (see the module docstring)."""
    return shared_paths("data", "cifar10-jpeg")


def load_cifar10(
    root: str | None, download: bool, cache: bool, cache_root: Path
) -> tuple[ImageSet, ImageSet]:
    """(train, test) from `root`, else the search order in the module docstring."""
    if root is not None:
        return _load_layout(Path(root), cache, cache_root, f"no CIFAR-10 files found in {root}")
    env = os.environ.get(CIFAR10_ENV)
    if env:
        return _load_layout(Path(env), cache, cache_root, f"{CIFAR10_ENV}={env} holds no CIFAR-10 files")
    for candidate in search_paths() + [Path(cache_root) / "torchvision"]:
        if detect_layout(candidate) is not None:
            return _load_layout(candidate, cache, cache_root, "")
    if not download:
        raise DiffbalanceError("CIFAR-10 not found and downloads are off", _FIX)
    return load_cifar10_batches(Path(cache_root) / "torchvision", download=True)


@register_source("cifar10", help=f"CIFAR-10, 32×32 colour, 10 classes (python batches, JPEG folders or tarball in "
                                 f"root, ${CIFAR10_ENV}, ../shared or a download)")
def load_cifar10_source(config) -> tuple[ImageSet, ImageSet]:
    """(train, test) for a DataConfig: `root`, else the search order in the module docstring."""
    return load_cifar10(config.root, config.download, config.cache, cache_dir())


def _load_layout(path: Path, cache: bool, cache_root: Path, not_found: str) -> tuple[ImageSet, ImageSet]:
    layout = detect_layout(path)
    if layout is None:
        raise DiffbalanceError(not_found, _FIX)
    kind, where = layout
    if kind == "batches":
        return load_cifar10_batches(where)
    if kind == "tarball":
        where = unpack_tarball(where, cache_root)
    return load_cifar10_jpeg(where, cache=cache, cache_root=cache_root)
