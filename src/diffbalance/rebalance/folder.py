"""`rebalance_folder`: fill the minority classes of an image folder with one method (the `rebalance` command)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffbalance.infra import distributed
from diffbalance.infra.atomic import check_writable, write_json
from diffbalance.data.image_folder import class_folders, scan_image_folder
from diffbalance.imbalance.specs import training_images
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import DeviceLike, entry_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import inside, refuse_out_inside_data
from diffbalance.imbalance.targets import generation_counts
from diffbalance.infra.progress import console
from diffbalance.rebalance.base import SET_ONCE, Rebalancer
from diffbalance.rebalance.registry import build_rebalancer
from diffbalance.rebalance.store import fill
from diffbalance.infra.resources import check_memory, image_bytes


def _first_size(items: list) -> tuple[int, int]:
    """(H, W) of the folder's first image, from its header (the memory estimate before decoding)."""
    from PIL import Image

    for path, _ in items:
        try:
            with Image.open(path) as img:
                return img.height, img.width
        except OSError:
            continue
    return 1, 1


def rebalance_folder(
    folder: Path | str,
    method: str,
    out: Path | str,
    *,
    params: Mapping[str, Any] | None = None,
    sampling_strategy: str | float | Mapping = "auto",
    image_size: int | None = None,
    channels: int = 3,
    image_column: str | None = None,
    label_column: str | None = None,
    on_corrupt: str = "skip",
    seed: int = 0,
    device: DeviceLike = "auto",
    progress: bool = True,
) -> ImageSet:
    """Read `folder` — an image folder <class>/<images>, or any image-set spec such as cifar10:train:linear=500 or
    hf:PATH[:SPLIT] (imbalance.specs) — then make the images `sampling_strategy` asks for into `out` (resumable).

    Everything is checked before anything is written: the method and its parameters, the device, the checkpoint
    or model, the output folder, the images, the sampling strategy and the memory it needs. A folder that needs
    no image (already balanced for the sampling strategy, or a single class) writes nothing. OUT/command.json
    records the options."""
    params = dict(params or {})
    for key, (_, option) in SET_ONCE.items():
        if key in params:
            raise DiffbalanceError(f"--params sets {key}", f"use {option} instead")
    device = entry_device(device)

    def checked() -> tuple[Rebalancer, Path, ImageSet, dict[int, int]]:  # rank 0 first (it fills the data cache)
        reb = build_rebalancer(method, params, path="--params", sampling_strategy=sampling_strategy, random_state=seed,
                               device=device)
        reb.check()
        refuse_out_inside_data(out, folder)
        checked_out = check_writable(Path(out))
        if (checked_out / "config.resolved.json").is_file():
            raise DiffbalanceError(f"{out} is a run folder (written by `diffbalance run`), not a fill folder",
                                   "give `diffbalance rebalance` a new or an earlier fill's --out folder")
        if Path(folder).expanduser().is_dir():  # the memory a folder needs is known before decoding it
            _, items = scan_image_folder(Path(folder).expanduser())
            h, w = (image_size, image_size) if image_size else _first_size(items)
            check_memory(image_bytes(len(items), channels, h, w), f"reading {len(items)} images at {h}×{w}",
                         "pass a smaller --image-size")
        data = training_images(str(folder), image_size=image_size, channels=channels, on_corrupt=on_corrupt,
                               image_column=image_column, label_column=label_column)
        h, w = data.image_size
        plan = reb.plan(data)  # an impossible sampling strategy fails here, before OUT exists
        reb.check_data(data)
        for name in class_folders(data.class_names):  # a class folder planted as a link out of OUT: before the lock
            inside(checked_out, name, "class")
        check_memory(image_bytes(2 * sum(plan.values()), channels, h, w),
                     f"{sum(plan.values())} fill images", "lower the sampling strategy")
        return reb, checked_out, data, plan

    reb, out, data, plan = distributed.main_first(checked)
    if not plan:
        needed = sum(generation_counts(data.counts(), sampling_strategy, data.class_names))
        why = (f"method {method!r} adds no images (sampling_strategy {sampling_strategy!r} asks for {needed} more)"
               if needed else f"{folder} already meets sampling_strategy {sampling_strategy!r}")
        console.print(f"nothing to add: {why} (per class: {data.counts()})")
        return ImageSet(data.images[:0], data.labels[:0], data.class_names, f"{method} fill (nothing to add)")
    with distributed.held_output(out):
        distributed.on_main(lambda: write_json(out / "command.json", {
            "folder": str(folder), "method": method, "params": params, "sampling_strategy": sampling_strategy,
            "image_size": image_size, "size": list(data.image_size), "channels": channels,
            "image_column": image_column, "label_column": label_column, "on_corrupt": on_corrupt, "seed": seed,
            "device": str(device),
            "world_size": distributed.current().world_size}))
        return fill(reb, data, out, workdir=out / ".work", progress=progress)
