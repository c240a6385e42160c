"""Image folders `root/<class>/<image>`: the one reader (every entry point: data sources, `rebalance`, `fid`) and
the one PNG writer (make-lt's output and the fill store).

Classes are the subfolders, sorted by name, unless the folder holds `classes.json` (written by
`write_class_listing`), which fixes the class order and names (names such as "T-shirt/top" cannot be folder names).
Images within a class are taken in file-name order. With `image_size` every image is resized so its shorter side is
`image_size` (antialiased), then center-cropped to `image_size` × `image_size`; without it images keep their size,
which must then be the same for all.

How pixels become uint8 grey or RGB, whatever the file holds:
- EXIF orientation is applied first, so a photo comes out the way viewers show it.
- 16-bit images (PNG grey, grey+alpha, RGB, RGBA; 16-bit grey TIFF) are scaled, v → round(v · 255 / 65535), not
  clipped. 32-bit integer images are read the same way when their values fit 0–65535; float (mode F) images are
  unreadable: their range is unknown.
- Alpha is dropped: every pixel keeps its stored colour, whatever its opacity. This is what torchvision's
  ImageFolder loader, pytorch-fid and clean-fid do (PIL `convert("RGB")`), so FID on a folder matches theirs.
  Palette images go through their palette; palette transparency is alpha and is dropped the same way.
- CMYK JPEGs (Adobe-inverted ones included, as PIL reads them), YCbCr and other colour modes become RGB.
- channels: 3 repeats grey to RGB; 1 turns colour into grey by ITU-R 601-2 luma (PIL: L = .299 R + .587 G + .114 B);
  None keeps each file's own (palette and CMYK count as colour) and makes the whole folder RGB if any file is colour.
- A file that cannot be decoded completely (not an image, empty, truncated, a folder named x.png, over PIL's
  decompression-bomb pixel limit) is unreadable: `on_corrupt="skip"` leaves it out with one `note:` line on stderr
  naming the count and the first ones; `"error"` stops with a one-line error. Nothing is half-decoded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from sklearn.model_selection import train_test_split
from torchvision.transforms.v2 import functional as TF

from diffbalance.atomic import atomic_path, write_json
from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError
from diffbalance.progress import console

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # the one list
ON_CORRUPT = ("skip", "error")
CLASSES_FILE = "classes.json"
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL modes that are one channel
WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # integer grey wider than 8 bits, read as 16-bit
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHOWN_UNREADABLE = 3  # unreadable files named in a report


# --- reading ---------------------------------------------------------------------------------------
class Unreadable(NamedTuple):
    """A file the reader could not decode, and why (a few words)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


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
        # every entry with an image suffix, a folder named x.png or a broken link included: those are reported
        # as unreadable rather than silently passed over
        # hidden files are never images of the set: macOS `._x.png` metadata, temporaries of an interrupted write
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
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
    """One image as uint8 (C, H, W), decoded by the rules in the module docstring. channels: 1, 3, or None = the
    file's own (1 for grey, else 3). image_size: None keeps the size; else the shorter side is resized (antialias)
    and the centre cropped square. Raises whatever the decoder raises for a bad file; `decode_images` turns that
    into an `Unreadable` and also makes truncated files and PIL's decompression-bomb warning errors."""
    data = Path(path).read_bytes()  # a folder named x.png fails here (IsADirectoryError)
    if not data:
        raise ValueError("empty file")
    with Image.open(io.BytesIO(data)) as img:  # parses the header only; checks PIL's pixel limit
        wide = _png16(data) if _is_png16(data) else None
        img = wide if wide is not None else _eight_bit(_upright(img))
    if channels is not None:
        img = img.convert("RGB" if channels == 3 else "L")  # grey repeated, or colour to luma
    x = torch.from_numpy(np.array(img, dtype=np.uint8))  # (H, W) or (H, W, 3)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # (C, H, W)
    if image_size is not None and tuple(x.shape[1:]) != (image_size, image_size):
        x = TF.resize(x, [image_size], antialias=True)  # shorter side → image_size
        x = TF.center_crop(x, [image_size, image_size])
    return x.contiguous()


def _upright(img: Image.Image) -> Image.Image:
    """Every pixel decoded now (a truncated file fails here, not somewhere later), then turned by its EXIF
    orientation (in place: no copy of an image that needs no turn)."""
    img.load()
    ImageOps.exif_transpose(img, in_place=True)
    return img


def _is_png16(data: bytes) -> bool:
    """A PNG whose IHDR (always the first chunk) says 16 bits per sample: PIL would keep only the high byte of
    colour samples, so these are decoded by torchvision (libpng) instead."""
    return data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 24 and data[24] == 16


def _png16(data: bytes) -> Image.Image | None:
    """A 16-bit PNG as an 8-bit "L" or "RGB" image: samples scaled, alpha dropped, EXIF orientation applied.
    None where torchvision no longer has `decode_png` (deprecated since 0.29): PIL then reads it, exact for grey,
    the high byte of each colour sample. (torchvision < 0.21 has no 16-bit decode: such files are unreadable.)"""
    try:
        from torchvision.io import ImageReadMode, decode_png
    except ImportError:  # pragma: no cover — a future torchvision
        return None
    try:
        x = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED,
                       apply_exif_orientation=True)  # (C, H, W) uint16; C: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    except RuntimeError as err:  # libpng's complaint, behind a C++ source location
        raise ValueError(re.sub(r"^.*?\.cpp:\d+, ", "", str(err))) from None
    x = x[: 1 if x.shape[0] <= 2 else 3].to(torch.int32)  # alpha dropped
    a = _scale_16bit(x.permute(1, 2, 0).numpy())  # (H, W, C)
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


def _scale_16bit(a: np.ndarray) -> np.ndarray:
    """Integer samples in 0–65535 → uint8 round(v · 255 / 65535) = round(v / 257); exact integer maths, and never a
    tie (v / 257 is never k + ½ since 257 is odd)."""
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"pixel values {a.min()}–{a.max()} outside 0–65535")
    return ((2 * a + 257) // 514).astype(np.uint8)


def _eight_bit(img: Image.Image) -> Image.Image:
    """Any PIL mode → "L" (grey modes) or "RGB" (the rest), 8 bits per channel, alpha dropped."""
    if img.mode in WIDE_INT_MODES:
        return Image.fromarray(_scale_16bit(np.asarray(img)))
    if img.mode == "F":
        raise ValueError("float pixels (mode F), range unknown")
    if img.mode in GREY_MODES:
        return img.convert("L")
    if img.mode in ("P", "PA"):  # through RGBA so transparency becomes alpha (and PIL warns of nothing)
        img = img.convert("RGBA")
    return img.convert("RGB")


def _reason(err: Exception) -> str:
    """A few words on why a file could not be read."""
    if isinstance(err, IsADirectoryError):
        return "a folder"
    if isinstance(err, FileNotFoundError):
        return "missing"
    if isinstance(err, PermissionError):
        return "no permission to read it"
    if isinstance(err, UnidentifiedImageError):
        return "not an image"
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"over PIL's limit of {Image.MAX_IMAGE_PIXELS} pixels"
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return "truncated" if "truncated" in text.lower() else text[:80]


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """While decoding: a truncated file fails instead of coming back half grey, and PIL's decompression-bomb warning
    fails the file instead of printing a two-line warning. Warning filters are process-wide, so worker threads
    started inside see them; both settings are put back afterwards."""
    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision",
                                    DeprecationWarning)  # said on every 16-bit PNG; _png16 has a fallback
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok


def decode_images(
    paths: list[Path], image_size: int | None, channels: int | None, workers: int | None = None
) -> tuple[list[torch.Tensor | None], list[Unreadable]]:
    """Decode in parallel threads (PIL and libpng release the GIL); an unreadable file gives None and is listed
    with its reason, in path order."""
    def one(path: Path) -> torch.Tensor | str:
        try:
            return read_image(path, image_size, channels)
        except Exception as err:  # noqa: BLE001 — whatever one file raises, that file is unreadable
            return _reason(err)

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with _strict_decoding(), ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, paths))
    bad = [Unreadable(Path(p), r) for p, r in zip(paths, results) if isinstance(r, str)]
    return [None if isinstance(r, str) else r for r in results], bad


def load_image_folder(
    root: Path,
    image_size: int | None = None,
    channels: int | None = None,
    on_corrupt: str = "skip",
    class_names: Sequence[str] | None = None,
) -> ImageSet:
    """Read `root/<class>/*` into an ImageSet (see the module docstring and `read_image`).

    With channels None a folder mixing grey and colour images becomes RGB (grey repeated to 3 channels); with
    image_size None all images must have one size. Unreadable files: on_corrupt "skip" leaves them out and prints one
    `note:` line on stderr, "error" raises a one-line DiffbalanceError; either way the count and the first few are
    named (meta: unreadable_count, unreadable_first, unreadable_report). `class_names`, if given, must match the
    folder's classes (used to read a test folder in the train folder's class order)."""
    _check_options(image_size, channels, on_corrupt)
    names, items = scan_image_folder(root)
    if class_names is not None:
        names, items = _align_classes(root, names, items, tuple(class_names))
    images, bad = decode_images([p for p, _ in items], image_size, channels)
    kept = [(x, p, label) for x, (p, label) in zip(images, items) if x is not None]
    meta = {"unreadable_count": len(bad), "unreadable_first": [str(b.path) for b in bad[:SHOWN_UNREADABLE]]}
    if bad:
        meta["unreadable_report"] = _unreadable_report(root, bad, len(items))
        _skip_or_fail(meta["unreadable_report"], on_corrupt, any_kept=bool(kept))
    xs = _same_channels([x for x, _, _ in kept])
    if image_size is None:
        _check_one_size(root, xs, [p for _, p, _ in kept])
    x = torch.stack(xs)  # (N, C, H, W)
    y = torch.tensor([label for _, _, label in kept], dtype=torch.int64)
    return ImageSet(x, y, names, str(Path(root)), meta)


def _unreadable_report(root: Path, bad: list[Unreadable], total: int) -> str:
    """'3 unreadable image(s) of 120 in ROOT, first: a/x.png (truncated), ...' — one line."""
    def short(path: Path) -> str:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
        return str(path)

    first = ", ".join(f"{short(b.path)} ({b.reason})" for b in bad[:SHOWN_UNREADABLE])
    more = ", ..." if len(bad) > SHOWN_UNREADABLE else ""
    return f"{len(bad)} unreadable image(s) of {total} in {root}, first: {first}{more}"


def _skip_or_fail(report: str, on_corrupt: str, any_kept: bool) -> None:
    """A one-line error for on_corrupt "error" or when nothing is left; else the one `note:` line."""
    if on_corrupt == "error":
        raise DiffbalanceError(report, "repair or delete them, or skip them (on_corrupt 'skip', --on-corrupt skip)")
    if not any_kept:
        raise DiffbalanceError(f"no readable images: {report}", "check the files are valid images")
    note_skipped(report)


def note_skipped(report: str) -> None:
    """`note: skipped <report>` as exactly one line on stderr; printed through the progress console so a live bar
    stays intact, and never a Python warning (two lines with source code)."""
    line = f"note: skipped {report}".replace("\n", "\\n").replace("\r", "\\r")
    console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)


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
