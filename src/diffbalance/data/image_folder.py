"""Image folders `root/<class>/<image>`: the one reader (every entry point: data sources, `rebalance`, `fid`) and
the one PNG writer (make-lt's output and the fill store).

Classes are the subfolders, sorted by name, unless the folder holds `classes.json` (written by
`write_class_listing`), which fixes the class order and names (names such as "T-shirt/top" cannot be folder names).
Images within a class are taken in file-name order. With `image_size` every image is resized so its shorter side is
`image_size` (antialiased), then center-cropped to `image_size` × `image_size`; without it images keep their size,
which must then be the same for all.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torchvision.transforms.v2 import functional as TF

from diffbalance.atomic import atomic_path, write_json
from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # the one list
ON_CORRUPT = ("skip", "error")
CLASSES_FILE = "classes.json"
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "F")  # PIL modes read as one channel when channels is None
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what PIL raises on bad files


# --- reading ---------------------------------------------------------------------------------------
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


def read_image(path: Path, image_size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """One image as uint8 (C, H, W). channels: 1, 3, or None = the file's own (1 for grey, else 3; alpha dropped).
    image_size: None keeps the size; else the shorter side is resized (antialias) and the centre cropped square."""
    with Image.open(path) as img:
        if channels is None:
            channels = 1 if img.mode in GREY_MODES else 3
        img = img.convert("RGB" if channels == 3 else "L")
        x = torch.from_numpy(np.array(img, dtype=np.uint8))  # (H, W) or (H, W, 3)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # (C, H, W)
    if image_size is not None and tuple(x.shape[1:]) != (image_size, image_size):
        x = TF.resize(x, [image_size], antialias=True)  # shorter side → image_size
        x = TF.center_crop(x, [image_size, image_size])
    return x.contiguous()


def decode_images(
    paths: list[Path], image_size: int | None, channels: int | None, workers: int | None = None
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
    image_size: int | None = None,
    channels: int | None = None,
    on_corrupt: str = "skip",
    class_names: Sequence[str] | None = None,
) -> ImageSet:
    """Read `root/<class>/*` into an ImageSet (see `read_image` for `image_size` and `channels`).

    With channels None a folder mixing grey and colour images becomes RGB (grey repeated to 3 channels); with
    image_size None all images must have one size. `class_names`, if given, must match the folder's classes
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
    kept = [(x, p, label) for x, (p, label) in zip(images, items) if x is not None]
    if not kept:
        raise DiffbalanceError(f"no readable images in {root}", "check the files are valid images")
    xs = _same_channels([x for x, _, _ in kept])
    if image_size is None:
        _check_one_size(root, xs, [p for _, p, _ in kept])
    x = torch.stack(xs)  # (N, C, H, W)
    y = torch.tensor([label for _, _, label in kept], dtype=torch.int64)
    return ImageSet(x, y, names, str(Path(root)), meta)


def _same_channels(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Grey images repeated to RGB when any image is RGB (only a channels=None read can mix them)."""
    if all(x.shape[0] == images[0].shape[0] for x in images):
        return images
    return [x.expand(3, -1, -1) if x.shape[0] == 1 else x for x in images]


def _check_one_size(root: Path, images: list[torch.Tensor], paths: list[Path]) -> None:
    first = tuple(images[0].shape[1:])
    for x, path in zip(images, paths):
        if tuple(x.shape[1:]) != first:
            raise DiffbalanceError(
                f"images in {root} differ in size: {paths[0].name} is {first[0]}×{first[1]}, "
                f"{path.parent.name}/{path.name} is {x.shape[1]}×{x.shape[2]}",
                "resize them to one size first, or read them with an image_size",
            )


def _align_classes(root: Path, names: tuple[str, ...], items: list, wanted: tuple[str, ...]) -> tuple:
    if set(names) != set(wanted):
        raise DiffbalanceError(
            f"classes in {root} ({', '.join(names)}) differ from the training classes ({', '.join(wanted)})",
            "give the test folder the same class subfolders",
        )
    remap = {i: wanted.index(n) for i, n in enumerate(names)}
    return wanted, [(p, remap[c]) for p, c in items]


def _check_options(image_size: int | None, channels: int | None, on_corrupt: str) -> None:
    if image_size is not None and image_size < 1:
        raise DiffbalanceError(f"image_size {image_size} is not positive", "use a size such as 32 or 64")
    if channels not in (None, 1, 3):
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


# --- writing ---------------------------------------------------------------------------------------
def folder_name(class_name: str) -> str:
    """A safe folder name for a class ("T-shirt/top" → "T-shirt_top")."""
    name = re.sub(r"[^\w.\- ]+", "_", class_name).strip(" .")
    return name or "class"


def class_folders(class_names: Sequence[str]) -> list[str]:
    """One safe folder name per class, unique even on case-insensitive filesystems ("a", "A" → "a", "A_2")."""
    out: list[str] = []
    for name in map(folder_name, class_names):
        candidate, k = name, 1
        while candidate.lower() in (o.lower() for o in out):
            k += 1
            candidate = f"{name}_{k}"
        out.append(candidate)
    return out


def write_png(image: torch.Tensor, path: Path) -> None:
    """uint8 (C, H, W), C = 1 or 3, as a PNG at `path`: written to a temporary sibling, then renamed into place
    (a crash never leaves half a file); the parent folder is created."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 (1|3, H, W) image, got {image.dtype} {tuple(image.shape)}")
    array = image.detach().cpu().permute(1, 2, 0).numpy()  # (H, W, C)
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(tmp, format="PNG")


def write_class_listing(
    root: Path, class_names: Sequence[str], folders: Sequence[str], counts: Sequence[int] | None = None
) -> Path:
    """`root/classes.json` (atomically): the class order and names, their folders and, if given, images per class."""
    listing = {"class_names": list(class_names), "folders": list(folders)}
    if counts is not None:
        listing["counts"] = [int(c) for c in counts]
    write_json(Path(root) / CLASSES_FILE, listing)
    return Path(root) / CLASSES_FILE


def write_image_folder(data: ImageSet, out_dir: Path) -> Path:
    """Write `out_dir/<class>/NNNNN.png` (file-name order = order in `data`) and `out_dir/classes.json`, atomically.

    Every class gets a folder, even one with no images, so the folder reads back with the same classes.
    """
    folders = class_folders(data.class_names)
    width = max(5, len(str(max(data.counts() + [1]))))
    with atomic_path(Path(out_dir)) as tmp:
        for folder in folders:
            (tmp / folder).mkdir(parents=True)
        jobs, seen = [], [0] * data.num_classes
        for x, label in zip(data.images, data.labels.tolist()):
            jobs.append((x, tmp / folders[label] / f"{seen[label]:0{width}d}.png"))
            seen[label] += 1
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            list(pool.map(lambda job: write_png(*job), jobs, chunksize=64))
        write_class_listing(tmp, data.class_names, folders, data.counts())
    return Path(out_dir)
