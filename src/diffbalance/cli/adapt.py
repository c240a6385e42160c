"""`diffbalance adapt`: adapt a pretrained text-to-image model to a dataset's classes (LoRA or textual inversion)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from diffbalance.cli.app import app, say
from diffbalance.cli.options import json_object
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.text2image.config import DEFAULT_MODEL


@app.command("adapt")
def adapt_command(
    data: Annotated[str, typer.Argument(help="training set: ImageFolder (<class>/<images>), NAME:SPLIT (e.g. "
                                             "cifar10:train, cut by a profile: append :linear=500) or hf:PATH[:SPLIT]")],
    out: Annotated[Path, typer.Option(help="adapter folder: LoRA weights or learned tokens + adapter.json (resumed)")],
    method: Annotated[str, typer.Option(help="lora | textual-inversion")] = "lora",
    model: Annotated[str, typer.Option(help="Stable Diffusion 1.x/2.x: Hugging Face id or local diffusers folder")]
        = DEFAULT_MODEL,
    steps: Annotated[Optional[int], typer.Option(help="optimiser steps (default: the config's, 1000)")] = None,
    config: Annotated[str, typer.Option(help="further AdaptConfig options as JSON, e.g. '{\"rank\": 8}'")] = "{}",
    image_size: Annotated[Optional[int], typer.Option(
        help="make every image N×N first (default: the images' own size when they share one)")] = None,
    image_column: Annotated[Optional[str], typer.Option(
        help="hf: the Image column (default: the dataset's one Image feature)")] = None,
    label_column: Annotated[Optional[str], typer.Option(
        help="hf: the label column (default: its one ClassLabel feature, or a column named label)")] = None,
    channels: Annotated[Optional[int], typer.Option(help="3 = RGB, 1 = grayscale (default: as the images are)")] = None,
    on_corrupt: Annotated[str, typer.Option(help="unreadable images: skip (with a one-line note) | error")] = "skip",
    seed: Annotated[int, typer.Option(help="adaptation seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume",
                                         help="continue from the latest checkpoint in OUT")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Fine-tune the model on the training set, every class at once; `rebalance --method ldm --params
    '{"adapter": "OUT"}'` then fills with it."""
    from diffbalance.generate.adapt.command import adapt_dataset
    from diffbalance.generate.adapt.config import AdaptConfig
    from diffbalance.imbalance.specs import training_images
    from diffbalance.infra.paths import refuse_out_inside_data

    options = json_object(config, "--config", '{"rank": 8}')
    for key, option in (("method", "--method"), ("seed", "--seed"), ("train_steps", "--steps")):
        if key in options:
            raise DiffbalanceError(f"--config sets {key}", f"use {option} instead")
    options = {**options, "method": method, "seed": seed, **({"train_steps": steps} if steps is not None else {})}
    adapt_config = AdaptConfig.from_dict(options, path="--config")
    refuse_out_inside_data(out, data)
    train = training_images(data, image_size, channels, on_corrupt, image_column, label_column)
    folder = adapt_dataset(train, model, adapt_config, out, device=device, resume=resume, command={
        "data": data, "image_size": image_size, "channels": channels, "on_corrupt": on_corrupt})
    probe = json.loads((folder / "adapter.json").read_text())["probe_loss"]
    say(f"adapter ({method}) written to {folder} (probe loss {probe['start']:.4f} → {probe['end']:.4f})")
