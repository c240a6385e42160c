"""Nothing half-written: outputs go to a temporary sibling and are renamed into place when complete; one process
at a time writes an output folder (`output_lock`), and what a killed process left half-written is removed when
the folder is next opened (`remove_stale_temps`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffbalance.infra.errors import DiffbalanceError


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` (and parents) or fail with a one-line error naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe.tmp-", delete=True)
        probe.close()
    except OSError as err:
        if full_reason(err):
            raise DiskFullError(path, full_reason(err)) from None
        raise DiffbalanceError(
            f"output folder {path} is not writable ({err.strerror or err})",
            "choose another folder with --out or fix its permissions",
        ) from None
    return path


def check_writable(path: Path, what: str = "output folder", option: str = "--out") -> Path:
    """Check, without creating anything, that folder `path` exists and is writable or could be created; the
    error names it as `what`, to be fixed with `option`."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise DiffbalanceError(f"{what} {path} is not writable ({probe} is a file)",
                               f"choose another folder with {option}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DiffbalanceError(f"{what} {path} is not writable (no permission on {probe})",
                               f"choose another folder with {option} or fix its permissions")
    try:  # permissions are not the whole story (root on a read-only or pseudo file system): try it
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise DiffbalanceError(f"{what} {path} is not writable ({probe}: {err.strerror or err})",
                               f"choose another folder with {option}") from None
    return path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it to `final`, on error remove it.

    Works for a file or a folder written at the temporary path. A full disk (or quota, or a read-only file
    system) while writing becomes one `DiskFullError` naming `final`, also when it happened in a nested write.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with one_line_when_full(final, rename_nested=True):
            final.parent.mkdir(parents=True, exist_ok=True)
            _remove(tmp)
            yield tmp
            _replace(tmp, final)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _replace(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`. An old folder `final` is first renamed to a temporary name (then deleted), so a
    crash never leaves a half-deleted folder under the final name: only something `remove_stale_temps` removes."""
    if not (final.is_dir() and tmp.is_dir()):
        os.replace(tmp, final)
        return
    old = final.with_name(f".{final.name}.tmp-old-{os.getpid()}")
    _remove(old)
    os.replace(final, old)
    os.replace(tmp, final)
    _remove_quietly(old)


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


def _remove_quietly(path: Path) -> None:
    """Best effort (used while another error is on its way up): what stays is a temporary name, removed later."""
    try:
        _remove(path)
    except OSError:
        pass


# errno → what the one-line error calls it; any of them means "make room (or go elsewhere), then run it again"
FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk full (quota exceeded)", errno.EROFS: "read-only file system"}
_RUST_OS_ERROR = re.compile(r"os error (\d+)")  # safetensors reports I/O errors as text: "... (os error 28)"


class DiskFullError(DiffbalanceError):
    """No room (ENOSPC, EDQUOT) or a read-only file system (EROFS) while writing `path`. Nothing half-written is
    left under a final name, so the same command resumes once there is room."""

    def __init__(self, path: Path, reason: str = FULL[errno.ENOSPC]):
        self.path, self.reason = Path(path), reason
        room = "make the file system writable" if reason == FULL[errno.EROFS] else "free space"
        super().__init__(f"{reason} while writing {path}",
                         f"{room} (or choose another --out), then run the same command again to resume")


def full_reason(err: BaseException) -> str | None:
    """What `err` says when it is a full disk / quota / read-only file system (an OSError, or a library error
    that carries the OS error number in its text, as safetensors' do); None for any other error."""
    if isinstance(err, OSError):
        return FULL.get(err.errno)
    if isinstance(err, DiffbalanceError):
        return None
    found = _RUST_OS_ERROR.search(str(err))
    return FULL.get(int(found.group(1))) if found else None


@contextlib.contextmanager
def one_line_when_full(path: Path, rename_nested: bool = False) -> Iterator[None]:
    """Turn a full-disk error raised inside into `DiskFullError(path)`; with `rename_nested`, a `DiskFullError`
    from a nested write (a file inside the folder being written) is renamed to `path` too."""
    try:
        yield
    except DiskFullError as err:
        if not rename_nested:
            raise
        raise DiskFullError(path, err.reason) from None
    except Exception as err:
        reason = full_reason(err)
        if reason is None:
            raise
        raise DiskFullError(path, reason) from None


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open with O_NOFOLLOW: a file diffbalance writes in place (the lock, a manifest it appends to) is never a
    symbolic link followed out of its folder; a link there is a one-line error that changes nothing."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DiffbalanceError(f"{path} is a symbolic link; diffbalance never writes through one",
                                   "remove the link (and check who put it there)") from None
        raise


LOCK_FILE = ".diffbalance.lock"
TEMP_MARK = ".tmp"  # every temporary name holds it: ".<name>.tmp-<pid>", "-old-<pid>", "-delete-<pid>"


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) while writing it. A second process is refused at once
    with a one-line error; the lock is the kernel's (flock), so a process killed with SIGKILL never leaves it stuck."""
    folder = ensure_writable_dir(Path(folder))
    with one_line_when_full(folder / LOCK_FILE):
        fd = open_no_follow(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise DiffbalanceError(f"another diffbalance process is writing to {folder}",
                                   "wait for it to finish, or use another output folder") from None
        raise DiffbalanceError(f"cannot lock {folder / LOCK_FILE} ({err.strerror or err})",
                               "use an output folder on a local file system") from None
    try:
        _note_pid(fd)
        yield folder
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _note_pid(fd: int) -> None:
    """Write the holder's pid into the lock file, for people; unbuffered and best effort (a full disk must not
    stop the lock, nor leave a pending write that fails later)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files and folders (names starting with "." and holding ".tmp") anywhere under `folder`:
    what a killed process was writing. Call it only while holding `output_lock(folder)`. Returns how many.

    One kind is put back instead: an old folder moved aside to be replaced (".<name>.tmp-old-<pid>") whose
    replacement never arrived, so a process killed between the two renames loses nothing it had finished."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in list(dirnames) + filenames:
            if not (name.startswith(".") and TEMP_MARK in name):
                continue
            path = Path(dirpath) / name
            final = _moved_aside_from(path)
            if final is not None and not final.exists():
                os.replace(path, final)
            else:
                _remove(path)
                removed += 1
        dirnames[:] = [d for d in dirnames if not (d.startswith(".") and TEMP_MARK in d)]
    return removed


def _moved_aside_from(path: Path) -> Path | None:
    """The final name `_replace` moved `path` away from, when `path` is such a name."""
    found = re.fullmatch(r"\.(.+)\.tmp-old-\d+", path.name)
    return path.with_name(found.group(1)) if found else None
