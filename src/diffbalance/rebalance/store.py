"""Fill images on disk: a PNG ImageFolder plus a manifest, written so that an interrupted fill resumes
and produces exactly the missing images — none lost, none twice.

Layout of a fill folder:
    fill.json          method, parameters, base seed, classes, images to add per class (written first)
    manifest.jsonl     one line per finished image: file, class, index, seed, the method's record
    <class name>/NNNNN.png
    complete.json      written last: the counts actually present (its presence marks a finished fill)

Image i of class c is always made from seed derive_seed(base_seed, c, i), so which batch it falls in,
and whether the run was interrupted, never changes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import numpy as np
from PIL import Image

from diffbalance.atomic import write_json
from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError
from diffbalance.progress import progress_bar
from diffbalance.rebalance.base import Rebalancer
from diffbalance.seeding import derive_seed


def _jobs(add: Sequence[int], done: set[tuple[int, int]], batch_size: int) -> list[tuple[int, list[int]]]:
    """Batches (class, image indices) of the images still missing, one class per batch."""
    jobs = []
    for c, n in enumerate(add):
        missing = [i for i in range(n) if (c, i) not in done]
        jobs += [(c, missing[k : k + batch_size]) for k in range(0, len(missing), batch_size)]
    return jobs


def _make_batch(reb: Rebalancer, c: int, indices: list[int]) -> tuple[torch.Tensor, list[dict]]:
    seeds = [derive_seed(reb.random_state, c, i) for i in indices]
    images, records = reb.generate(c, seeds)
    if images.dtype != torch.uint8 or len(images) != len(indices) or len(records) != len(indices):
        raise RuntimeError(f"{reb.name}.generate returned {images.dtype} {tuple(images.shape)} for {len(indices)} seeds")
    return images.cpu(), [{"class_index": c, "index": i, "seed": s, **r} for i, s, r in zip(indices, seeds, records)]


def generate_in_memory(reb: Rebalancer, train: ImageSet, add: Sequence[int], progress: bool = True) -> ImageSet:
    """Generate the fill images without touching the disk (for `fit_resample`). `reb` must be prepared."""
    images, labels = [], []
    with progress_bar(f"{reb.name} fill", sum(add), progress) as advance:
        for c, indices in _jobs(add, set(), reb.batch_size):
            batch, _ = _make_batch(reb, c, indices)
            images.append(batch)
            labels += [c] * len(indices)
            advance(len(indices))
    if not images:
        return ImageSet(train.images[:0], train.labels[:0], train.class_names, f"{reb.name} fill")
    return ImageSet(torch.cat(images), torch.tensor(labels), train.class_names, f"{reb.name} fill")


def fill(
    reb: Rebalancer,
    train: ImageSet,
    add: Sequence[int],
    out_dir: Path,
    workdir: Path | None = None,
    progress: bool = True,
) -> ImageSet:
    """Generate `add[c]` images of every class c into `out_dir` (resuming what is there) and return them.

    Prepares the rebalancer (e.g. trains or loads its generator) only if images are missing.
    """
    out_dir = Path(out_dir)
    header = {
        "method": reb.name,
        "params": _jsonable(reb.params()),
        "seed": reb.random_state,
        "class_names": list(train.class_names),
        "add_per_class": list(add),
        "image_shape": list(train.images.shape[1:]),
    }
    _check_or_write_header(out_dir, header)
    done = _finished_images(out_dir, train.class_names)
    jobs = _jobs(add, set(done), reb.batch_size)
    if jobs:
        reb.prepare(train, getattr(reb, "device_", None) or _device(reb), workdir)
        with open(out_dir / "manifest.jsonl", "a") as manifest, progress_bar(
            f"{reb.name} fill", sum(len(ix) for _, ix in jobs), progress
        ) as advance:
            for c, indices in jobs:
                batch, records = _make_batch(reb, c, indices)
                for image, record in zip(batch, records):
                    record["file"] = _save_png(out_dir, train.class_names[c], record["index"], image)
                    manifest.write(json.dumps(record) + "\n")
                manifest.flush()
                os.fsync(manifest.fileno())
                advance(len(indices))
        done = _finished_images(out_dir, train.class_names)
    write_json(out_dir / "complete.json", {"present_per_class": [sum(1 for (c, _) in done if c == k) for k in range(len(add))]})
    return load_fill(out_dir, train.class_names, add)


def load_fill(out_dir: Path, class_names: Sequence[str], add: Sequence[int] | None = None) -> ImageSet:
    """Read a fill folder back (images in class, index order)."""
    done = _finished_images(Path(out_dir), class_names)
    keys = sorted(done) if add is None else [(c, i) for c, n in enumerate(add) for i in range(n)]
    missing = [k for k in keys if k not in done]
    if missing:
        raise DiffbalanceError(f"fill folder {out_dir} lacks {len(missing)} images", "run the fill again to resume it")
    images = [_read_png(Path(out_dir) / done[k]) for k in keys]
    if not images:
        raise DiffbalanceError(f"fill folder {out_dir} holds no images", "nothing to load; run the fill first")
    return ImageSet(torch.stack(images), torch.tensor([c for c, _ in keys]), tuple(class_names), f"fill {out_dir}")


def read_manifest(out_dir: Path) -> list[dict]:
    path = Path(out_dir) / "manifest.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by an interruption: that image is redone
            continue
    return records


def _finished_images(out_dir: Path, class_names: Sequence[str]) -> dict[tuple[int, int], str]:
    """(class, index) → file, for images recorded in the manifest whose PNG exists."""
    done = {}
    for r in read_manifest(out_dir):
        if (out_dir / r.get("file", "")).is_file():
            done[(r["class_index"], r["index"])] = r["file"]
    return done


def _save_png(out_dir: Path, class_name: str, index: int, image: torch.Tensor) -> str:
    rel = f"{class_name}/{index:05d}.png"
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    array = image.permute(1, 2, 0).numpy()  # (H, W, C)
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(tmp, format="PNG")
    os.replace(tmp, path)
    return rel


def _read_png(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        array = np.asarray(im)
    array = array[..., None] if array.ndim == 2 else array  # (H, W, C)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _check_or_write_header(out_dir: Path, header: dict) -> None:
    path = out_dir / "fill.json"
    if path.exists():
        old = json.loads(path.read_text())
        same = {k: old.get(k) for k in header if k != "add_per_class"} == {k: v for k, v in header.items() if k != "add_per_class"}
        if not same:
            raise DiffbalanceError(
                f"{out_dir} holds fill images made with other settings ({old.get('method')}, seed {old.get('seed')})",
                "use a new output folder, or delete this one to start over",
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, header)


def _device(reb: Rebalancer):
    from diffbalance.device import resolve_device

    return resolve_device(reb.device)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
