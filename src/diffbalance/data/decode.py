"""Decoding one image file into uint8 grey or RGB pixels: `read_image`, and `decode_images` for many files in
threads (the reader behind every image folder; see `data.image_folder`).

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
import os
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from diffbalance.infra.progress import note

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # the one list
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL modes that are one channel
WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # integer grey wider than 8 bits, read as 16-bit
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- reading ---------------------------------------------------------------------------------------
class Unreadable(NamedTuple):
    """A file the reader could not decode, and why (a few words)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"



def read_image(path: Path | bytes, image_size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """One image as uint8 (C, H, W), decoded by the rules in the module docstring, from a file or from the file's
    bytes (e.g. a Hugging Face dataset's encoded image). channels: 1, 3, or None = the file's own (1 for grey, else
    3). image_size: None keeps the size; else the shorter side is resized (antialias) and the centre cropped square.
    Raises whatever the decoder raises for a bad file; `decode_images` turns that into an `Unreadable` and also
    makes truncated files and PIL's decompression-bomb warning errors."""
    data = path if isinstance(path, bytes) else Path(path).read_bytes()  # a folder named x.png fails here
    if not data:
        raise ValueError("empty file")
    with Image.open(io.BytesIO(data)) as img:  # parses the header only; checks PIL's pixel limit
        wide = _png16(data) if _is_png16(data) else None
        img = wide if wide is not None else _eight_bit(_upright(img))
    if channels is not None:
        img = img.convert("RGB" if channels == 3 else "L")  # grey repeated, or colour to luma
    x = torch.from_numpy(np.array(img, dtype=np.uint8))  # (H, W) or (H, W, 3)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # (C, H, W)
    return square(x, image_size) if image_size is not None else x.contiguous()


def square(x: torch.Tensor, side: int) -> torch.Tensor:
    """(C, H, W) → (C, side, side): the shorter side resized to `side` (antialias) and the centre cropped, so the
    aspect is kept (nothing is stretched)."""
    if tuple(x.shape[1:]) != (side, side):
        x = TF.resize(x, [side], antialias=True)  # shorter side → side
        x = TF.center_crop(x, [side, side])
    return x.contiguous()


def one_size(images: list[torch.Tensor], where: str) -> list[torch.Tensor]:
    """Images kept at their own size when they share one; otherwise each made `side`×`side` by `square`, `side` the
    median shorter side (so most images are cropped, few enlarged), said in one note line."""
    sizes = {tuple(x.shape[1:]) for x in images}
    if len(sizes) <= 1:
        return images
    shorter = sorted(min(x.shape[1:]) for x in images)
    side = int(shorter[len(shorter) // 2])
    (lo_h, lo_w), (hi_h, hi_w) = min(sizes), max(sizes)
    note(f"images in {where} have {len(sizes)} sizes ({lo_h}×{lo_w} … {hi_h}×{hi_w}): each resized to {side}×{side} "
         f"(shorter side to {side}, the median, then the centre; aspect kept); set image_size to choose the size")
    return [square(x, side) for x in images]


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
    paths: list[Path | bytes], image_size: int | None, channels: int | None, workers: int | None = None,
    names: list[str] | None = None,
) -> tuple[list[torch.Tensor | None], list[Unreadable]]:
    """Decode files (or their bytes) in parallel threads (PIL and libpng release the GIL); an unreadable one gives
    None and is listed with its reason, in order, under its path (or `names[k]` for bytes)."""
    def one(path: Path) -> torch.Tensor | str:
        try:
            return read_image(path, image_size, channels)
        except Exception as err:  # noqa: BLE001 — whatever one file raises, that file is unreadable
            return _reason(err)

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with _strict_decoding(), ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, paths))
    names = names or [str(p) for p in paths]
    bad = [Unreadable(Path(n), r) for n, r in zip(names, results) if isinstance(r, str)]
    return [None if isinstance(r, str) else r for r in results], bad
