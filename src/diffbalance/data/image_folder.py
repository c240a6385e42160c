"""Image folders `root/<class>/*.png|jpg|...` read into an `ImageSet`, and written back (make-lt's output).

Classes are the subfolders, sorted by name, unless the folder holds `classes.json` (written by
`write_image_folder`), which fixes the class order and names (names such as "T-shirt/top" cannot be folder names).
Images within a class are taken in file-name order. Every image is resized so its shorter side is `image_size`
(antialiased), then center-cropped to `image_size` × `image_size`.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torchvision.transforms.v2 import functional as TF

from diffbalance.atomic import atomic_path
from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ON_CORRUPT = ("skip", "error")
CLASSES_FILE = "classes.json"
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what PIL raises on bad files


def scan_image_folder(root: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """Class names and (path, class index) for every image under `root`; one-line errors for missing/empty folders."""
    root = Path(root)
    if not root.is_dir():
        raise DiffbalanceError(
            f"image folder {root} does not exist", "pass a folder laid out as <root>/<class>/<image>"
        )
    names, folders, listed = _class_folders(root)
    if not folders:
        raise DiffbalanceError(
            f"image folder {root} has no class subfolders", "put each class's images in <root>/<class>/"
        )
    items: list[tuple[Path, int]] = []
    for index, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DiffbalanceError(
                f"class folder {folder} has no images",
                f"add {'/'.join(IMAGE_EXTENSIONS)} files to it or remove the class"
                + (f" from {CLASSES_FILE}" if listed else " folder"),
            )
        items += [(p, index) for p in files]
    return names, items


def _class_folders(root: Path) -> tuple[tuple[str, ...], list[Path], bool]:
    """(class names, their folders, whether they come from classes.json)."""
    listing = root / CLASSES_FILE
    if listing.is_file():
        try:
            info = json.loads(listing.read_text())
            names, folders = tuple(info["class_names"]), [root / f for f in info["folders"]]
        except (ValueError, KeyError, TypeError):
            raise DiffbalanceError(f"{listing} is damaged", "delete it to use the sorted subfolder names") from None
        missing = [f for f in folders if not f.is_dir()]
        if missing:
            raise DiffbalanceError(
                f"class folder {missing[0]} listed in {listing} is missing", "restore it or delete the listing"
            )
        return names, folders, True
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return tuple(p.name for p in folders), folders, False


def read_image(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """One image as uint8 (channels, image_size, image_size): shorter side resized (antialias), center-cropped."""
    with Image.open(path) as img:
        img = img.convert("RGB" if channels == 3 else "L")
        x = torch.from_numpy(np.array(img, dtype=np.uint8))  # (H, W) or (H, W, 3)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # (C, H, W)
    if tuple(x.shape[1:]) != (image_size, image_size):
        x = TF.resize(x, [image_size], antialias=True)  # shorter side → image_size
        x = TF.center_crop(x, [image_size, image_size])
    return x.contiguous()


def decode_images(
    paths: list[Path], image_size: int, channels: int, workers: int | None = None
) -> tuple[list[torch.Tensor | None], list[Path]]:
    """Decode in parallel threads (PIL releases the GIL); unreadable files give None and are listed."""
    def one(path: Path) -> torch.Tensor | None:
        try:
            return read_image(path, image_size, channels)
        except _UNREADABLE:
            return None

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(one, paths, chunksize=64))
    return images, [p for p, x in zip(paths, images) if x is None]


def load_image_folder(
    root: Path,
    image_size: int = 32,
    channels: int = 3,
    on_corrupt: str = "skip",
    class_names: tuple[str, ...] | None = None,
) -> ImageSet:
    """Read `root/<class>/*` into an ImageSet. `class_names`, if given, must match the folder's classes
    (used to read a test folder in the train folder's class order)."""
    _check_options(image_size, channels, on_corrupt)
    names, items = scan_image_folder(root)
    if class_names is not None:
        names, items = _align_classes(root, names, items, tuple(class_names))
    images, bad = decode_images([p for p, _ in items], image_size, channels)
    meta = {"unreadable_count": len(bad), "unreadable_first": [str(p) for p in bad[:3]]}
    if bad:
        problem = f"{len(bad)} unreadable image(s) in {root}, first: {', '.join(meta['unreadable_first'])}"
        if on_corrupt == "error":
            raise DiffbalanceError(problem, "delete or repair them, or use on_corrupt='skip'")
        warnings.warn(f"{problem}; skipped", stacklevel=2)
    kept = [(x, label) for x, (_, label) in zip(images, items) if x is not None]
    if not kept:
        raise DiffbalanceError(f"no readable images in {root}", "check the files are valid images")
    x = torch.stack([x for x, _ in kept])  # (N, C, S, S)
    y = torch.tensor([label for _, label in kept], dtype=torch.int64)
    return ImageSet(x, y, names, str(Path(root)), meta)


def _align_classes(root: Path, names: tuple[str, ...], items: list, wanted: tuple[str, ...]) -> tuple:
    if set(names) != set(wanted):
        raise DiffbalanceError(
            f"classes in {root} ({', '.join(names)}) differ from the training classes ({', '.join(wanted)})",
            "give the test folder the same class subfolders",
        )
    remap = {i: wanted.index(n) for i, n in enumerate(names)}
    return wanted, [(p, remap[c]) for p, c in items]


def _check_options(image_size: int, channels: int, on_corrupt: str) -> None:
    if image_size < 1:
        raise DiffbalanceError(f"image_size {image_size} is not positive", "use a size such as 32 or 64")
    if channels not in (1, 3):
        raise DiffbalanceError(f"channels {channels} is not 1 or 3", "use 3 for RGB or 1 for grayscale")
    if on_corrupt not in ON_CORRUPT:
        raise DiffbalanceError(f"on_corrupt {on_corrupt!r} is unknown", f"use one of {', '.join(ON_CORRUPT)}")


def stratified_split(data: ImageSet, test_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Seeded split keeping class proportions (sklearn `train_test_split(stratify=labels)`); order kept within parts."""
    if not 0 < test_fraction < 1:
        raise DiffbalanceError(f"test_fraction {test_fraction} is outside (0, 1)", "use e.g. 0.2")
    counts = data.counts()
    if min(counts) < 2:
        small = data.class_names[counts.index(min(counts))]
        raise DiffbalanceError(
            f"class {small!r} has {min(counts)} image(s), too few to split", "add images or pass a test folder"
        )
    index = np.arange(len(data))
    try:
        train_idx, test_idx = train_test_split(
            index, test_size=test_fraction, random_state=seed, stratify=data.labels.numpy()
        )
    except ValueError as err:  # e.g. fewer test slots than classes
        raise DiffbalanceError(
            f"cannot split {data.source}: {err}", "raise test_fraction or pass a test folder"
        ) from None
    train = data.subset(np.sort(train_idx).tolist(), source=f"{data.source} [train split]")
    test = data.subset(np.sort(test_idx).tolist(), source=f"{data.source} [test split]")
    return train, test


def folder_name(class_name: str) -> str:
    """A safe folder name for a class ("T-shirt/top" → "T-shirt_top")."""
    name = re.sub(r"[^\w.\- ]+", "_", class_name).strip(" .")
    return name or "class"


def write_image_folder(data: ImageSet, out_dir: Path) -> Path:
    """Write `out_dir/<class>/NNNNN.png` (file-name order = order in `data`) and `out_dir/classes.json`, atomically.

    Every class gets a folder, even one with no images, so the folder reads back with the same classes.
    """
    folders = _unique([folder_name(n) for n in data.class_names])
    width = max(5, len(str(max(data.counts() + [1]))))
    with atomic_path(Path(out_dir)) as tmp:
        for folder in folders:
            (tmp / folder).mkdir(parents=True)
        jobs, seen = [], [0] * data.num_classes
        for x, label in zip(data.images, data.labels.tolist()):
            jobs.append((x, tmp / folders[label] / f"{seen[label]:0{width}d}.png"))
            seen[label] += 1
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            list(pool.map(lambda job: _write_png(*job), jobs, chunksize=64))
        listing = {"class_names": list(data.class_names), "folders": folders, "counts": data.counts()}
        (tmp / CLASSES_FILE).write_text(json.dumps(listing, indent=2) + "\n")
    return Path(out_dir)


def _write_png(image: torch.Tensor, path: Path) -> None:
    array = image.permute(1, 2, 0).numpy()  # (H, W, C)
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, k = name, 1
        while candidate.lower() in (o.lower() for o in out):  # case-insensitive filesystems
            k += 1
            candidate = f"{name}_{k}"
        out.append(candidate)
    return out
