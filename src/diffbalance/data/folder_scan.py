"""Listing an image folder `root/<class>/<image>` (classes, files in order) and reporting its unreadable files: the
rules every folder reader shares (`data.image_folder` in memory, `data.folder_store` on disk)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Literal, get_args

from diffbalance.data.decode import IMAGE_EXTENSIONS, Unreadable
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.progress import note

OnCorrupt = Literal["skip", "error"]  # what an unreadable image does: left out with a note | an error
ON_CORRUPT: tuple[str, ...] = get_args(OnCorrupt)
CLASSES_FILE = "classes.json"
SHOWN_UNREADABLE = 3  # unreadable files named in a report


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
        try:
            files = sorted(p for p in folder.iterdir()
                           if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        except OSError as err:  # a folder that cannot be listed (/proc/<pid> of another user, no permission)
            raise DiffbalanceError(f"class folder {folder} cannot be listed ({err.strerror or err})",
                                   "pass a folder laid out as <root>/<class>/<image> that you can read") from None
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
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:  # no permission to list it
        raise DiffbalanceError(f"image folder {root} cannot be listed ({err.strerror or err})",
                               "pass a folder laid out as <root>/<class>/<image> that you can read") from None
    return tuple(p.name for p in folders), folders, False


def unreadable_report(root: Path, bad: list[Unreadable], total: int) -> str:
    """'3 unreadable image(s) of 120 in ROOT, first: a/x.png (truncated), ...' — one line."""
    def short(path: Path) -> str:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
        return str(path)

    first = ", ".join(f"{short(b.path)} ({b.reason})" for b in bad[:SHOWN_UNREADABLE])
    more = ", ..." if len(bad) > SHOWN_UNREADABLE else ""
    return f"{len(bad)} unreadable image(s) of {total} in {root}, first: {first}{more}"


def skip_or_fail(report: str, on_corrupt: str, any_kept: bool) -> None:
    """A one-line error for on_corrupt "error" or when nothing is left; else the one `note:` line."""
    if on_corrupt == "error":
        raise DiffbalanceError(report, "repair or delete them, or skip them (on_corrupt 'skip', --on-corrupt skip)")
    if not any_kept:
        raise DiffbalanceError(f"no readable images: {report}", "check the files are valid images")
    note_skipped(report)


def note_skipped(report: str) -> None:
    """`note: skipped <report>` as exactly one line on stderr (infra.progress.note)."""
    note(f"skipped {report}")


def align_classes(root: Path, names: tuple[str, ...], items: list, wanted: tuple[str, ...]) -> tuple:
    if set(names) != set(wanted):
        raise DiffbalanceError(
            f"classes in {root} ({', '.join(names)}) differ from the training classes ({', '.join(wanted)})",
            "give the test folder the same class subfolders",
        )
    remap = {i: wanted.index(n) for i, n in enumerate(names)}
    return wanted, [(p, remap[c]) for p, c in items]


def check_read_options(image_size: int | None, channels: int | None, on_corrupt: str) -> None:
    """The reader's options, checked once for every entry point (the folder source, `rebalance`, `fid`)."""
    if image_size is not None and image_size < 1:
        raise DiffbalanceError(f"image_size {image_size} is not positive", "use a size such as 32 or 64")
    if channels not in (None, 1, 3):
        raise DiffbalanceError(f"channels {channels} is not 1 or 3", "use 3 for RGB or 1 for grayscale")
    if on_corrupt not in ON_CORRUPT:
        raise DiffbalanceError(f"on_corrupt {on_corrupt!r} is unknown", f"use one of {', '.join(ON_CORRUPT)}")
