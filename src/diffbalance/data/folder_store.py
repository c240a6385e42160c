"""An image folder too large for memory, decoded once into an on-disk image store (`data.store`) in chunks.

The same rules as the in-memory reader (`data.image_folder.load_image_folder`): classes, file order, decoding,
unreadable files, one size kept or the median shorter side for mixed sizes — but the size is found from the files'
headers first (EXIF orientation included), so pixels are decoded once, straight into the store. A killed build
resumes at its last finished chunk; a full disk is one line before any decoding.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from diffbalance.data.cache import cache_key
from diffbalance.data.decode import GREY_MODES, Unreadable, decode_images, square
from diffbalance.data.folder_scan import (
    SHOWN_UNREADABLE,
    align_classes,
    check_read_options,
    scan_image_folder,
    skip_or_fail,
    unreadable_report,
)
from diffbalance.data.imageset import ImageSet
from diffbalance.data.store import INFO, STORE_ENV, use_store
from diffbalance.data.store_build import StoreWriter, open_store
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import cache_dir
from diffbalance.infra.progress import note, progress_bar

SAMPLED = 16  # files whose headers estimate a folder's decoded size (the first readable one counts)
CHUNK = 1024  # images decoded (in threads) and written per step
TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def header_size(path: Path | bytes) -> tuple[int, int] | None:
    """(height, width) as the image will be decoded (EXIF orientation applied), from the header; None if unreadable."""
    found = _header(path)
    return None if found is None else found[:2]


def _header(path: Path | bytes) -> tuple[int, int, int] | None:
    """(height, width, channels the decoder gives when it keeps the file's own: 1 grey, else 3) from the header of
    a file or of its bytes."""
    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:
            w, h = img.size
            if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:  # a decompression bomb: unreadable
                return None
            if img.getexif().get(0x0112) in TURNED:
                w, h = h, w
            return h, w, 1 if img.mode in GREY_MODES else 3
    except Exception:  # noqa: BLE001 — the decode will name why
        return None


def load_folder_store(root: Path, image_size: int | None, channels: int | None, on_corrupt: str,
                      class_names=None, mixed_sizes: str = "resize", force: bool = False) -> ImageSet | None:
    """The folder as a stored set when its decoded pixels are too many for memory (data.store.use_store) or
    `force`, decoded once into the cache (keyed by the folder's files and these options); None: read it into
    memory."""
    _, items = scan_image_folder(root)
    if not force and not use_store(_estimate(items, image_size, channels)):
        return None
    if channels is None:  # the files' own: RGB if any is colour (the in-memory reader's rule)
        channels = max((h[2] for h in map(_header, (p for p, _ in items)) if h is not None), default=3)
    if image_size is None and mixed_sizes == "error":
        sizes = {s for s in (header_size(p) for p, _ in items) if s is not None}
        if len(sizes) > 1:
            raise DiffbalanceError(f"images in {root} differ in size ({len(sizes)} sizes)",
                                   "resize them to one size first, or read them with an image_size")
    options = {"image_size": image_size, "channels": channels, "on_corrupt": on_corrupt,
               "class_names": None if class_names is None else list(class_names)}
    key = cache_key("folder-store", [root], options)
    data = store_image_folder(root, cache_dir("stores", key), key, image_size, channels, on_corrupt, class_names)
    note_stored(str(root), data, cache_dir("stores", key))
    return data


def folder_bytes(root: Path, image_size: int | None, channels: int | None) -> int:
    """Decoded bytes of a folder: its files × channels × the pixels of `image_size` or of the first readable of
    its first SAMPLED files."""
    return _estimate(scan_image_folder(root)[1], image_size, channels)


def _estimate(items: list, image_size: int | None, channels: int | None) -> int:
    first = next((h for h in map(_header, (p for p, _ in items[:SAMPLED])) if h is not None), (1, 1, 3))
    h, w = (image_size, image_size) if image_size else first[:2]
    return len(items) * (channels or first[2]) * h * w


def note_stored(source: str, data: ImageSet, folder: Path) -> None:
    """The one line that says a set is kept on disk, how large it is and how to choose otherwise."""
    note(f"{source}: {len(data)} images of {'×'.join(map(str, data.images.shape[1:]))} "
         f"({data.images.nbytes / 1e9:.1f} GB decoded) kept on disk in an image store at {folder}, read by index "
         f"({STORE_ENV}=memory|disk|auto chooses; auto: above a quarter of this machine's memory)")


def target_size(found: list, image_size: int | None, where: str) -> tuple[tuple[int, int], bool]:
    """((H, W), resize): `image_size` square; the one size the images share (`found`: their header sizes, None for
    unreadable ones); or the median shorter side, square, for mixed sizes (said in one note, as `decode.one_size`
    does)."""
    if image_size is not None:
        return (image_size, image_size), False
    sizes = [s for s in found if s is not None]
    distinct = set(sizes)
    if len(distinct) <= 1:
        return (next(iter(distinct)) if distinct else (1, 1)), False
    side = sorted(min(s) for s in sizes)[len(sizes) // 2]
    (lo_h, lo_w), (hi_h, hi_w) = min(distinct), max(distinct)
    note(f"images in {where} have {len(distinct)} sizes ({lo_h}×{lo_w} … {hi_h}×{hi_w}): each resized to "
         f"{side}×{side} (shorter side to {side}, the median, then the centre; aspect kept); set image_size to "
         "choose the size")
    return (side, side), True


def store_image_folder(root: Path, folder: Path, key: str, image_size: int | None = None, channels: int = 3,
                       on_corrupt: str = "skip", class_names=None, progress: bool = True) -> ImageSet:
    """`root/<class>/<image>` decoded into the store at `folder` (resuming a killed build), opened lazily."""
    check_read_options(image_size, channels, on_corrupt)
    names, items = scan_image_folder(root)
    if class_names is not None:
        names, items = align_classes(root, names, items, tuple(class_names))
    paths = [p for p, _ in items]
    return decode_into_store(folder, key, lambda a, b: (paths[a:b], None), [label for _, label in items], names,
                             str(Path(root)), image_size, channels, on_corrupt,
                             lambda bad, total: unreadable_report(root, bad, total), progress,
                             sizes=lambda: map(header_size, paths))


def decode_into_store(folder: Path, key: str, blobs, labels: list[int], class_names, source: str,
                      image_size: int | None, channels: int, on_corrupt: str, report, progress: bool = True,
                      sizes=None, meta: dict | None = None) -> ImageSet:
    """Encoded images decoded chunk by chunk into the store at `folder` (resuming a killed build) and opened lazily:
    `blobs(start, stop)` → (files or their bytes, names for errors or None) of items start…stop; `labels` one per
    item; `sizes()` their (H, W) from the headers (None where unreadable), read only when `image_size` is None;
    `report(unreadable, total)` the one-line report of unreadable items. Unreadable items are left out with that
    note (on_corrupt "skip") or stop the build ("error")."""
    if (folder / INFO).is_file():
        try:
            return open_store(folder, key)
        except Exception:  # noqa: BLE001 — a stale or damaged store is rebuilt
            pass
    total = len(labels)
    (h, w), resize = target_size(list(sizes()) if image_size is None else [], image_size, source)
    writer = StoreWriter(folder, total, (channels, h, w), key)
    read = int(writer.state.get("read", 0))
    bad = [Unreadable(Path(p), r) for p, r in writer.state.get("unreadable", [])]
    with progress_bar(f"store {Path(source).name}", total - read, enabled=progress) as advance:
        for start in range(read, total, CHUNK):
            stop = min(start + CHUNK, total)
            items, names = blobs(start, stop)
            images, unreadable = decode_images(items, image_size, channels, names=names)
            kept = [(square(x, h) if resize else x, labels[start + k]) for k, x in enumerate(images) if x is not None]
            bad += unreadable
            if on_corrupt == "error" and unreadable:
                skip_or_fail(report(bad, total), on_corrupt, any_kept=True)
            stacked = torch.stack([x for x, _ in kept]) if kept else torch.zeros((0, channels, h, w), dtype=torch.uint8)
            writer.append(stacked, [label for _, label in kept],
                          {"read": stop, "unreadable": [[str(b.path), b.reason] for b in bad]})
            advance(stop - start)
    info = {**(meta or {}), "unreadable_count": len(bad),
            "unreadable_first": [str(b.path) for b in bad[:SHOWN_UNREADABLE]]}
    if bad:
        info["unreadable_report"] = report(bad, total)
        skip_or_fail(info["unreadable_report"], on_corrupt, any_kept=writer.done > 0)
    writer.finish(tuple(class_names), source, info)
    return open_store(folder, key)


def store_files(paths: list[Path], labels: list[int], class_names, folder: Path, key: str,
                image_shape: tuple[int, int, int], source: str, progress: bool = True) -> ImageSet:
    """Files that must all be readable (a fill's PNGs), decoded as they are into the store at `folder`."""
    if (folder / INFO).is_file():
        try:
            return open_store(folder, key)
        except Exception:  # noqa: BLE001 — stale or damaged: rebuilt
            pass
    writer = StoreWriter(folder, len(paths), image_shape, key)
    with progress_bar(f"store {Path(source).name}", len(paths) - writer.done, enabled=progress) as advance:
        for start in range(writer.done, len(paths), CHUNK):
            images, bad = decode_images(paths[start:start + CHUNK], None, None)
            if bad:
                raise DiffbalanceError(f"{bad[0].path} cannot be read ({bad[0].reason})",
                                       "make the fill again (delete its folder first)")
            writer.append(torch.stack(images), labels[start:start + CHUNK])
            advance(len(images))
    writer.finish(tuple(class_names), source, {})
    return open_store(folder, key)
