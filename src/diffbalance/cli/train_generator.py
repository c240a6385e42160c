"""`diffbalance train-generator`: train Method 1's class-conditional diffusion model on an imbalanced set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from diffbalance.cli.app import app


@app.command("train-generator")
def train_generator_command(
    out: Annotated[Path, typer.Option(help="output folder: checkpoints, unet/ (final EMA model), resolved config")],
    dataset: Annotated[str, typer.Option(help="fashion-mnist | cifar10 | folder")] = "fashion-mnist",
    root: Annotated[Optional[str], typer.Option(help="dataset folder (None: default search / download)")] = None,
    profile: Annotated[str, typer.Option(help="imbalance profile: linear | exponential | step | none")] = "linear",
    n_min: Annotated[Optional[int], typer.Option(help="linear profile: images kept by the smallest class")] = None,
    ratio: Annotated[float, typer.Option(help="exponential/step profiles: largest / smallest class")] = 10.0,
    size: Annotated[str, typer.Option(help="UNet size: tiny | small | paper")] = "tiny",
    steps: Annotated[Optional[int], typer.Option(help="optimiser steps (default: the config's)")] = None,
    config: Annotated[str, typer.Option(help="further CFGTrainConfig options as JSON, e.g. '{\"lr\": 1e-4}'")] = "{}",
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="continue from the latest checkpoint in OUT")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Train the CFG generator; a later `rebalance --method cfg --params '{"checkpoint": "OUT"}'` samples it."""
    from diffbalance.atomic import ensure_writable_dir, write_json
    from diffbalance.data.sources import DataConfig, load_train_test
    from diffbalance.device import resolve_device
    from diffbalance.errors import DiffbalanceError
    from diffbalance.generate.cfg.config import CFGTrainConfig
    from diffbalance.generate.cfg.train import train_generator
    from diffbalance.imbalance.subset import ImbalanceConfig, apply_profile

    try:
        options = json.loads(config)
    except json.JSONDecodeError as err:
        raise DiffbalanceError(f"--config is not valid JSON ({err.msg})", "quote it, e.g. '{\"lr\": 1e-4}'") from None
    if not isinstance(options, dict):
        raise DiffbalanceError("--config must be a JSON object", "pass e.g. '{\"lr\": 1e-4}'")
    options = {**options, "model_size": size, "seed": seed, **({"train_steps": steps} if steps is not None else {})}
    train_config = CFGTrainConfig.from_dict(options)
    data_config = DataConfig(name=dataset, root=root)
    dev = resolve_device(device)
    ensure_writable_dir(out)
    resolved = {"data": data_config.to_dict(), "profile": profile, "n_min": n_min, "ratio": ratio,
                "train": train_config.to_dict(), "resume": resume, "device": str(dev)}
    write_json(out / "command.json", resolved)
    train, _ = load_train_test(data_config)
    imbalanced = apply_profile(train, ImbalanceConfig(profile=profile, n_min=n_min, ratio=ratio))
    final = train_generator(imbalanced, train_config, out, dev, progress=True, resume=resume)
    typer.echo(f"generator written to {final} (classes kept: {imbalanced.counts()})")
