"""Image folders `root/<class>/<image>`: the one reader (every entry point: data sources, `rebalance`, `fid`) and
the one PNG writer (make-lt's output and the fill store).

Classes are the subfolders, sorted by name, unless the folder holds `classes.json` (written by
`write_class_listing`), which fixes the class order and names (names such as "T-shirt/top" cannot be folder names).
Images within a class are taken in file-name order. With `image_size` every image is resized so its shorter side is
`image_size` (antialiased), then center-cropped to `image_size` × `image_size`; without it images keep their size,
which must then be the same for all.

Pixels are decoded by `data.decode`: EXIF orientation, 16-bit scaling, the alpha rule, unreadable files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffbalance.data.decode import IMAGE_EXTENSIONS, Unreadable, decode_images, one_size, read_image  # noqa: F401 (re-exported)
from diffbalance.data.folder_scan import (  # noqa: F401 (CLASSES_FILE, ON_CORRUPT, OnCorrupt: re-exported)
    CLASSES_FILE,
    ON_CORRUPT,
    SHOWN_UNREADABLE,
    OnCorrupt,
    align_classes,
    check_read_options,
    note_skipped,
    scan_image_folder,
    skip_or_fail,
    unreadable_report,
)
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.atomic import atomic_path, write_json
from diffbalance.infra.errors import DiffbalanceError


def load_image_folder(
    root: Path,
    image_size: int | None = None,
    channels: int | None = None,
    on_corrupt: str = "skip",
    class_names: Sequence[str] | None = None,
    mixed_sizes: str = "resize",
    store: bool | None = None,
) -> ImageSet:
    """Read `root/<class>/*` into an ImageSet (see the module docstring and `read_image`).

    With channels None a folder mixing grey and colour images becomes RGB (grey repeated to 3 channels); with
    image_size None images keep their size when they share one, and otherwise (mixed_sizes "resize") are made one
    square size, the median shorter side, with a note (decode.one_size) — or (mixed_sizes "error", for FID, which
    must see every image as it is) refused in one line. Unreadable files: on_corrupt "skip" leaves them out and
    prints one
    `note:` line on stderr, "error" raises a one-line DiffbalanceError; either way the count and the first few are
    named (meta: unreadable_count, unreadable_first, unreadable_report). `class_names`, if given, must match the
    folder's classes (used to read a test folder in the train folder's class order). `store`: keep the decoded
    images on disk (True), in memory (False) or, None, on disk when they would take more than memory allows
    (data.store.use_store; an on-disk image store in the cache, read by index: data.folder_store)."""
    check_read_options(image_size, channels, on_corrupt)
    from diffbalance.data.folder_store import load_folder_store  # it reads folders with this module's rules

    stored = None if store is False else load_folder_store(Path(root), image_size, channels, on_corrupt, class_names,
                                                          mixed_sizes, force=bool(store))
    if stored is not None:  # too large for memory: an on-disk image store, read by index
        return stored
    names, items = scan_image_folder(root)
    if class_names is not None:
        names, items = align_classes(root, names, items, tuple(class_names))
    images, bad = decode_images([p for p, _ in items], image_size, channels)
    kept = [(x, p, label) for x, (p, label) in zip(images, items) if x is not None]
    meta = {"unreadable_count": len(bad), "unreadable_first": [str(b.path) for b in bad[:SHOWN_UNREADABLE]]}
    if bad:
        meta["unreadable_report"] = unreadable_report(root, bad, len(items))
        skip_or_fail(meta["unreadable_report"], on_corrupt, any_kept=bool(kept))
    xs = _same_channels([x for x, _, _ in kept])
    if image_size is None and mixed_sizes == "error":
        _check_one_size(root, xs, [p for _, p, _ in kept])
    elif image_size is None:
        xs = one_size(xs, str(root))
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


def stratified_split(data: ImageSet, test_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Seeded split keeping class proportions (sklearn `train_test_split(stratify=labels)`); order kept within parts."""
    from sklearn.model_selection import train_test_split  # scikit-learn takes a second to import: only when splitting

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
