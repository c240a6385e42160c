"""`diffbalance rebalance`: fill the minority classes of an image folder with one method, nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from diffbalance.cli.app import app


@app.command("rebalance")
def rebalance(
    folder: Annotated[Path, typer.Argument(help="ImageFolder of the imbalanced training set (<class>/<images>)")],
    method: Annotated[str, typer.Option(help="rebalancer: oversample, mixup, cutmix, cfg, ldm, ldm-img2img")],
    out: Annotated[Path, typer.Option(help="fill folder: PNG ImageFolder + manifest (resumed if present)")],
    target: Annotated[str, typer.Option(help="auto | not majority | minority | ratio in (0,1] | JSON {class: n}")] = "auto",
    params: Annotated[str, typer.Option(help="the method's parameters as JSON")] = "{}",
    image_size: Annotated[int, typer.Option(help="images are resized to this size")] = 32,
    channels: Annotated[int, typer.Option(help="3 = RGB, 1 = grayscale")] = 3,
    seed: Annotated[int, typer.Option(help="base seed of the fill images")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Generate images until every class reaches the target; writes OUT/<class>/*.png and OUT/manifest.jsonl."""
    from diffbalance.atomic import ensure_writable_dir, write_json
    from diffbalance.data.image_folder import load_image_folder
    from diffbalance.errors import DiffbalanceError
    from diffbalance.imbalance.targets import generation_counts
    from diffbalance.rebalance.base import build_rebalancer
    from diffbalance.rebalance.store import fill

    try:
        method_params = json.loads(params)
        target_value = _parse_target(target)
    except json.JSONDecodeError as err:
        raise DiffbalanceError(f"--params/--target is not valid JSON ({err.msg})", "quote it, e.g. '{\"alpha\": 0.6}'") from None
    reb = build_rebalancer(method, {**method_params, "random_state": seed, "device": device})
    data = load_image_folder(folder, image_size=image_size, channels=channels)
    add = generation_counts(data.counts(), target_value, data.class_names)
    ensure_writable_dir(out)
    write_json(out / "command.json", {"folder": str(folder), "method": method, "params": method_params, "target": target,
                                      "image_size": image_size, "channels": channels, "seed": seed, "device": device})
    fills = fill(reb, data, add, out, workdir=out / ".work")
    typer.echo(f"{len(fills)} images written to {out} (per class: {add})")


def _parse_target(target: str):
    if target in ("auto", "not majority", "minority", "all"):
        return target
    try:
        return float(target)
    except ValueError:
        return json.loads(target)
