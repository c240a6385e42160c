"""`rebalance_folder`: fill the minority classes of an image folder with one method (the `rebalance` command)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffbalance.atomic import ensure_writable_dir, write_json
from diffbalance.data.image_folder import load_image_folder
from diffbalance.data.imageset import ImageSet
from diffbalance.device import DeviceLike, resolve_device
from diffbalance.errors import DiffbalanceError
from diffbalance.rebalance.registry import build_rebalancer
from diffbalance.rebalance.store import fill

# options the command sets for the method; --params must not repeat them
COMMAND_LEVEL = {"sampling_strategy": "--target", "random_state": "--seed", "device": "--device"}


def rebalance_folder(
    folder: Path | str,
    method: str,
    out: Path | str,
    *,
    params: Mapping[str, Any] | None = None,
    target: str | float | Mapping = "auto",
    image_size: int = 32,
    channels: int = 3,
    seed: int = 0,
    device: DeviceLike = "auto",
    progress: bool = True,
) -> ImageSet:
    """Read `folder` (<class>/<images>), then make the images `target` asks for into `out` (resumable).
    Checks the method, its parameters and the device before anything is written; OUT/command.json records it all."""
    params = dict(params or {})
    for key, option in COMMAND_LEVEL.items():
        if key in params:
            raise DiffbalanceError(f"--params sets {key}", f"use {option} instead")
    dev = resolve_device(device)
    reb = build_rebalancer(method, params, path="--params", sampling_strategy=target, random_state=seed, device=dev)
    data = load_image_folder(folder, image_size=image_size, channels=channels)
    reb.plan(data)  # an impossible target fails here, before OUT exists
    out = ensure_writable_dir(Path(out))
    write_json(out / "command.json", {"folder": str(folder), "method": method, "params": params, "target": target,
                                      "image_size": image_size, "channels": channels, "seed": seed,
                                      "device": str(dev)})
    return fill(reb, data, out, workdir=out / ".work", progress=progress)
