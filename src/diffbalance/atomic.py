"""Nothing half-written: outputs go to a temporary sibling and are renamed into place when complete; one process
at a time writes an output folder (`output_lock`), and what a killed process left half-written is removed when
the folder is next opened (`remove_stale_temps`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffbalance.errors import DiffbalanceError


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` (and parents) or fail with a one-line error naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe.tmp-", delete=True)
        probe.close()
    except OSError as err:
        raise DiffbalanceError(
            f"output folder {path} is not writable ({err.strerror or err})",
            "choose another folder with --out or fix its permissions",
        ) from None
    return path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it to `final`, on error remove it.

    Works for a file or a folder written at the temporary path.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if final.is_dir() and tmp.is_dir():
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_text(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def write_json(final: Path, obj: Any) -> None:
    write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


LOCK_FILE = ".diffbalance.lock"
TEMP_MARK = ".tmp"  # every temporary name holds it: ".<name>.tmp-<pid>", ".<name>.png.tmp"


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) while writing it. A second process is refused at once
    with a one-line error; the lock is the kernel's (flock), so a process killed with SIGKILL never leaves it stuck."""
    folder = ensure_writable_dir(Path(folder))
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.close()
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise DiffbalanceError(f"another diffbalance process is writing to {folder}",
                                   "wait for it to finish, or use another output folder") from None
        raise
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield folder
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files and folders (names starting with "." and holding ".tmp") anywhere under `folder`:
    what a killed process was writing. Call it only while holding `output_lock(folder)`. Returns how many."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in list(dirnames) + filenames:
            if name.startswith(".") and TEMP_MARK in name:
                _remove(Path(dirpath) / name)
                removed += 1
        dirnames[:] = [d for d in dirnames if not (d.startswith(".") and TEMP_MARK in d)]
    return removed
