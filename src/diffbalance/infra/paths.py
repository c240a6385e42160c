"""Where diffbalance keeps caches (one environment variable, one default), where it looks for the developers' shared
files, and names that become folders."""

from __future__ import annotations

import os
from pathlib import Path

from diffbalance.infra.errors import DiffbalanceError

CACHE_ENV = "DIFFBALANCE_CACHE"
SHARED_ENV = "DIFFBALANCE_SHARED"  # a `shared/` folder elsewhere than beside the project's root


def cache_dir(*parts: str) -> Path:
    """`$DIFFBALANCE_CACHE/<parts>`, default `~/.cache/diffbalance/<parts>` (decoded data sets, FID statistics)."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "diffbalance"
    return root.joinpath(*parts)


def shared_paths(*parts: str) -> list[Path]:
    """Where the shared files may hold `parts`, in search order: `../shared/<parts>` from the current directory
    (every checkout has `shared/` beside its root), then `$DIFFBALANCE_SHARED/<parts>` when it is set."""
    paths = [Path.cwd().parent.joinpath("shared", *parts)]
    if os.environ.get(SHARED_ENV):
        paths.append(Path(os.environ[SHARED_ENV]).joinpath(*parts))
    return paths


def plain_name(name: str, what: str) -> str:
    """`name` if it can be one folder name (no '/', '\\', NUL; not '', '.', '..'; not absolute); else a one-line
    error naming `what` (profile, method, …). Every name that becomes a path is checked with this or `inside`."""
    if (not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0")
            or Path(name).is_absolute()):
        raise DiffbalanceError(f"{what} name {name!r} cannot be a folder name",
                               f"name the {what} without '/', '\\', '..' or a leading '/', e.g. my-{what}")
    return name


def inside(parent: Path | str, name: str, what: str) -> Path:
    """parent/name for a plain `name` (see `plain_name`) that stays inside `parent`: where it exists already,
    it must resolve inside the resolved parent (a symbolic link out of the folder is refused)."""
    parent, path = Path(parent), Path(parent) / plain_name(name, what)
    if (path.exists() or path.is_symlink()) and not path.resolve().is_relative_to(parent.resolve()):
        raise DiffbalanceError(f"{path} ({what} {name!r}) leads outside {parent} (a symbolic link)",
                               "remove the link, or choose another output folder")
    return path


def refuse_out_inside_data(out: Path | str, data: Path | str) -> None:
    """One line when the output folder is the data folder or inside it (a fill written into the images it reads
    would come back as a class folder on every later read). `data`: a folder path, or an hf:PATH[:SPLIT] spec."""
    text = str(data)
    if text.startswith("hf:"):
        text = text[3:].split(":")[0]
    folder = Path(text).expanduser()
    if not folder.is_dir():
        return  # a named data set (cifar10:train) or a file: nothing to write into
    o, d = Path(out).expanduser().resolve(), folder.resolve()
    if o == d or d in o.parents:
        raise DiffbalanceError(f"--out {out} is inside the data folder {data}",
                               "write the output outside the data folder (later reads would take it for a class)")
