"""`fill`: a rebalancer's images written to disk as a PNG ImageFolder plus a manifest, so that an interrupted fill
resumes and produces exactly the missing images — none lost, none twice.

Layout of a fill folder:
    fill.json          method, parameters, base seed, classes, images to add per class (written first)
    classes.json       class names and their folders (the folder reads back as an ImageFolder)
    manifest.jsonl     one line per finished image: file, class, index, seed, the method's record (appended once
                       its PNG is in place; a line cut short by a crash is dropped when the fill resumes); sorted
                       by (class, index) when the fill completes
    manifest-rank<r>.jsonl  while a launched fill runs: rank r's lines (merged into manifest.jsonl at the end;
                       a resume at any world size reads them)
    <class folder>/NNNNN.png
    complete.json      written last: the counts actually present (its presence marks a finished fill)

How many images each class gets is the rebalancer's `sampling_strategy` (its `plan`); image i of class c always
comes from seed derive_seed(base_seed, c, i), so which batch it falls in, and whether the run was interrupted,
never changes it. A full disk while writing is one `DiskFullError` line naming the file; what was finished stays
recorded, and the same call resumes once there is room.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from diffbalance.infra import distributed
from diffbalance.infra.atomic import atomic_path, one_line_when_full, open_no_follow, write_json, write_text
from diffbalance.data.image_folder import class_folders, read_image, write_class_listing, write_png
from diffbalance.data.cache import cache_key
from diffbalance.data.folder_store import store_files
from diffbalance.data.imageset import ImageSet
from diffbalance.data.store import use_store
from diffbalance.infra.paths import cache_dir
from diffbalance.infra.errors import DiffbalanceError, require_type
from diffbalance.infra.paths import inside
from diffbalance.infra.progress import progress_bar
from diffbalance.infra.renames import renamed
from diffbalance.rebalance.base import Rebalancer
from diffbalance.rebalance.registry import build_rebalancer

FILL_FORMAT = 2  # 1: fill.json without "format" (parameters as given, device and batch size included)
# parameters that never change an image, so a fill may resume under other values
NOT_IDENTITY = ("sampling_strategy", "device", "batch_size", "compile")
IDENTITY_KEYS = ("method", "params", "seed", "class_names", "image_shape")  # what fill.json pins for a resume
MANIFEST = "manifest.jsonl"
MANIFEST_PART = "manifest-rank"  # manifest-rank<r>.jsonl: what rank r of a launched fill finished
PNG_WRITERS = 4  # threads encoding PNGs while the next batch is generated


def fill(
    reb: Rebalancer,
    train: ImageSet,
    out_dir: Path | str,
    workdir: Path | str | None = None,
    progress: bool = True,
) -> ImageSet:
    """Make the images `reb.sampling_strategy` asks for into `out_dir` (resuming what is there) and return them.

    The rebalancer is fitted (e.g. its generator trained or loaded, into `workdir`, default `out_dir/.work`) only
    when images are missing. Under torchrun every rank calls `fill` alike: the missing images are shared out
    (each class's missing indices round-robin over the ranks), each rank writes its own PNGs and manifest part,
    and rank 0 merges the parts into one manifest sorted by (class, index) — the same bytes at any world size.
    """
    require_type(reb, Rebalancer, "reb", "a rebalancer (build_rebalancer(name, params))")
    require_type(train, ImageSet, "train", "an ImageSet")
    require_type(out_dir, (str, os.PathLike), "out_dir", "a folder path")
    out_dir = Path(out_dir)
    plan = reb.plan(train)
    header = fill_header(reb, train, plan)
    images_to_add = header["images_to_add"]
    folders = [inside(out_dir, f, "class").name for f in class_folders(train.class_names)]  # no link out of out_dir

    def start() -> dict[int, list[int]]:  # rank 0: check or write the header, list what is missing
        reb.check_data(train)  # before anything is written
        _check_or_write_header(out_dir, header)
        done = _finished_images(out_dir)
        todo = {c: [i for i in range(n) if (c, i) not in done] for c, n in plan.items()}
        todo = {c: missing for c, missing in todo.items() if missing}
        if todo:
            write_class_listing(out_dir, train.class_names, folders)
        return todo

    todo = distributed.on_main(start)
    if todo:
        reb.fit(train, Path(workdir) if workdir is not None else out_dir / ".work")  # every rank (DDP training)
        share = {c: distributed.shard(missing) for c, missing in todo.items()}
        distributed.agree(lambda: _write_images(reb, share, folders, out_dir, progress))
    distributed.on_main(lambda: _finish(out_dir, train.num_classes))
    return load_fill(out_dir, train.class_names, images_to_add)


def fill_header(reb: Rebalancer, train: ImageSet, plan: dict[int, int], **extra: Any) -> dict[str, Any]:
    """fill.json of a fill of `train` by `reb` (its plan given): what pins a resume (IDENTITY_KEYS) and the images
    each class gets; `extra` adds sections (a filtered fill's filter)."""
    return {"format": FILL_FORMAT, "method": reb.name, "params": identity_params(reb), "seed": reb.random_state,
            "class_names": list(train.class_names), "images_to_add": [plan.get(c, 0) for c in range(train.num_classes)],
            "image_shape": list(train.images.shape[1:]), **extra}


def _finish(out_dir: Path, num_classes: int) -> None:
    """Merge the manifest parts into manifest.jsonl (sorted by class, index) and write complete.json."""
    done = _finished_records(out_dir)
    lines = "".join(json.dumps(done[key]) + "\n" for key in sorted(done))
    manifest = out_dir / MANIFEST
    if not manifest.is_file() or manifest.read_text() != lines or _manifest_parts(out_dir):
        write_text(manifest, lines)
        for part in _manifest_parts(out_dir):
            part.unlink(missing_ok=True)
    present = [sum(1 for (c, _) in done if c == k) for k in range(num_classes)]
    write_json(out_dir / "complete.json", {"present_per_class": present})


def _key(record: dict) -> tuple[int, int]:
    return int(record["class_index"]), int(record["index"])


def _write_images(reb: Rebalancer, todo: dict[int, list[int]], folders: Sequence[str], out_dir: Path,
                  progress: bool) -> None:
    """Make and write the `todo` images. PNGs are written by a thread pool while the next batch is generated;
    each image's manifest line is appended once its PNG is in place (fsynced once per batch), so a crash or a
    full disk leaves every finished image recorded and no line without its PNG; a PNG whose line could not be
    written is removed again. Rank r of a launched job appends to its own part, manifest-rank<r>.jsonl."""
    d = distributed.current()
    manifest = out_dir / (MANIFEST if not d.active else f"{MANIFEST_PART}{d.rank}.jsonl")
    fd = _open_manifest(manifest)
    pending: list[tuple[list[dict], list[Future]]] = []
    failed: list[str] = []  # the file whose write or manifest line failed: nothing after it is recorded

    def record_done(records: list[dict], writes: list[Future]) -> None:
        for k, (record, write) in enumerate(zip(records, writes)):
            try:
                write.result()  # the PNG is in place (or its one-line error is raised here)
                with one_line_when_full(manifest):
                    _append_line(fd, json.dumps(record) + "\n")
            except BaseException:
                failed.append(record["file"])
                discard(records[k:], writes[k:])
                raise
        with one_line_when_full(manifest):
            os.fsync(fd)

    def discard(records: list[dict], writes: list[Future]) -> None:
        """PNGs that will get no manifest line are removed, so the manifest and the PNGs on disk agree."""
        wait(writes)
        for record in records:
            (out_dir / record["file"]).unlink(missing_ok=True)

    try:
        with ThreadPoolExecutor(PNG_WRITERS) as pool, \
                progress_bar(f"{reb.name} fill", sum(map(len, todo.values())), progress) as advance:
            try:
                for c, indices, images, records in reb.iter_batches(todo):
                    for record in records:
                        record["file"] = f"{folders[c]}/{record['index']:05d}.png"
                    pending.append((records, [pool.submit(_write_png, image, out_dir / r["file"])
                                              for image, r in zip(images, records)]))
                    if len(pending) > 1:  # the previous batch's PNGs were written while this one was made
                        record_done(*pending.pop(0))
                    advance(len(indices))
                while pending:
                    record_done(*pending.pop(0))
            except BaseException:  # keep what was made before the error (an interrupt, a failing batch)
                for records, writes in pending:
                    if failed:
                        discard(records, writes)
                        continue
                    try:
                        record_done(records, writes)
                    except BaseException:  # noqa: BLE001 — the first error is the one to report
                        pass
                raise
    finally:
        os.close(fd)


def _write_png(image: torch.Tensor, path: Path) -> None:
    with one_line_when_full(path):
        write_png(image, path)


def _open_manifest(path: Path) -> int:
    """A descriptor appending to manifest.jsonl (created if missing). A last line cut short by a crash is cut off
    first: the next line would otherwise be glued to it, and both be lost."""
    with one_line_when_full(path):
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _append_line(fd: int, line: str) -> None:
    """Append `line` whole, or not at all: on an error (a full disk) the file is cut back to where it was."""
    data = memoryview(line.encode())
    size = os.fstat(fd).st_size
    try:
        while data:
            data = data[os.write(fd, data):]
    except BaseException:
        os.ftruncate(fd, size)
        raise


def load_fill(out_dir: Path | str, class_names: Sequence[str], images_to_add: Sequence[int] | None = None) -> ImageSet:
    """Read a fill folder back (images in class, index order); `images_to_add` = the images expected per class."""
    require_type(out_dir, (str, os.PathLike), "out_dir", "a fill folder path")
    out_dir = Path(out_dir)
    if not (out_dir / "fill.json").is_file():
        raise DiffbalanceError(f"{out_dir} is not a fill folder (no fill.json)",
                               "pass a folder written by `diffbalance rebalance` or `fill`")
    done = _finished_images(out_dir)
    keys = sorted(done) if images_to_add is None else [(c, i) for c, n in enumerate(images_to_add) for i in range(n)]
    missing = [k for k in keys if k not in done]
    if missing:
        raise DiffbalanceError(f"fill folder {out_dir} lacks {len(missing)} images", "run the fill again to resume it")
    if not keys:  # a fill that adds nothing (an identity method, or an already balanced set)
        shape = json.loads((out_dir / "fill.json").read_text())["image_shape"]
        return ImageSet(torch.zeros((0, *shape), dtype=torch.uint8), torch.zeros(0, dtype=torch.long),
                        tuple(class_names), f"fill {out_dir}")
    shape = tuple(json.loads((out_dir / "fill.json").read_text())["image_shape"])
    if use_store(len(keys) * math.prod(shape)):  # a fill larger than memory: decoded once into a store, read by index
        key = cache_key("fill", [out_dir], {"keys": len(keys)})
        return store_files([out_dir / done[k] for k in keys], [c for c, _ in keys], class_names,
                           cache_dir("stores", key), key, shape, f"fill {out_dir}")
    images = [read_image(out_dir / done[k]) for k in keys]
    return ImageSet(torch.stack(images), torch.tensor([c for c, _ in keys]), tuple(class_names), f"fill {out_dir}")


def read_manifest(out_dir: Path | str) -> list[dict]:
    """Every record of a fill folder's manifest and its per-rank parts (a launched fill cut short leaves parts)."""
    return _manifest_records(Path(out_dir))


def _manifest_parts(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob(f"{MANIFEST_PART}*.jsonl"))


def _manifest_records(out_dir: Path) -> list[dict]:
    records = []
    for path in [out_dir / MANIFEST, *_manifest_parts(out_dir)]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by an interruption: that image is redone
                continue
    return records


def identity_params(reb: Rebalancer) -> dict[str, Any]:
    """The parameters that decide the images, as JSON (a resumed fill must have the same)."""
    return {k: v for k, v in _jsonable(reb.params()).items() if k not in NOT_IDENTITY}


def copy_fill(src: Path, dst: Path) -> None:
    """Make `dst` a copy of the finished fill `src` (a method whose images another folder already holds), unless
    `dst` already holds a fill of the same images — same method, parameters, seed, classes, shape and filter — which
    `fill` then resumes; a fill of other images there is replaced."""
    src, dst = Path(src), Path(dst)
    if not (src / "complete.json").is_file():
        return
    if (dst / "fill.json").is_file():
        have, want = (json.loads((d / "fill.json").read_text()) for d in (dst, src))
        if all(have.get(k) == want.get(k) for k in (*IDENTITY_KEYS, "filter")):
            return
    with atomic_path(dst) as tmp:  # replaces an old dst only once the copy is complete
        shutil.copytree(src, tmp)


def _finished_images(out_dir: Path) -> dict[tuple[int, int], str]:
    """(class, index) → file, for images recorded in the manifest whose PNG exists."""
    return {key: r["file"] for key, r in _finished_records(out_dir).items()}


def _finished_records(out_dir: Path) -> dict[tuple[int, int], dict]:
    """(class, index) → its manifest record (the last one), for images whose PNG exists."""
    return {_key(r): r for r in read_manifest(out_dir) if (out_dir / r.get("file", "")).is_file()}


def _check_or_write_header(out_dir: Path, header: dict) -> None:
    path = out_dir / "fill.json"
    if path.is_symlink():
        raise DiffbalanceError(f"{path} is a symbolic link; diffbalance never reads or writes through one",
                               "remove the link (and check who put it there)")
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if not isinstance(old, dict):
                raise ValueError
        except (OSError, ValueError, UnicodeDecodeError):
            raise DiffbalanceError(f"{path} is damaged (not a fill header)",
                                   "delete the folder to start over, or use a new output folder") from None
        if {k: _saved_identity(old).get(k) for k in IDENTITY_KEYS} != {k: header[k] for k in IDENTITY_KEYS}:
            raise DiffbalanceError(
                f"{out_dir} holds fill images made with other settings ({old.get('method')}, seed {old.get('seed')})",
                "use a new output folder, or delete this one to start over",
            )
    write_json(path, header)  # creates out_dir; a full disk or read-only file system is one line


def _saved_identity(old: dict) -> dict:
    """A saved header with its parameters normalised the way today's rebalancer writes them: rebuilt through the
    rebalancer, so a parameter added since (at its default) and older formats (parameters as given) still match."""
    params = {k: v for k, v in old.get("params", {}).items() if k not in NOT_IDENTITY}
    try:
        params = renamed(params, ("guidance_scale",), "fill.json params")  # format 1 of ldm: diffusers' s = 1 + w
        return {**old, "params": identity_params(build_rebalancer(old["method"], params))}
    except (DiffbalanceError, KeyError):
        return {**old, "params": None}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
