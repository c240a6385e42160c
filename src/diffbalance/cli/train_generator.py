"""`diffbalance train-generator`: train Method 1's class-conditional diffusion model on an imbalanced set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from diffbalance.cli.app import app, say
from diffbalance.cli.options import json_object
from diffbalance.data.sources import DataConfig, describe_sources
from diffbalance.imbalance.profiles import PROFILES


@app.command("train-generator")
def train_generator_command(
    out: Annotated[Path, typer.Option(help="output folder: the generator (a diffusers pipeline folder) + checkpoints")],
    dataset: Annotated[str, typer.Option(help=describe_sources())] = "fashion-mnist",
    root: Annotated[Optional[str], typer.Option(help="dataset folder (None: default search / download)")] = None,
    profile: Annotated[str, typer.Option(help=f"imbalance profile: {' | '.join(PROFILES)}")] = "linear",
    n_min: Annotated[Optional[int], typer.Option(help="linear profile: images kept by the smallest class")] = None,
    ratio: Annotated[Optional[float], typer.Option(help="exponential/step profiles: largest / smallest class")] = None,
    size: Annotated[str, typer.Option(help="UNet size: tiny | small | paper")] = "tiny",
    steps: Annotated[Optional[int], typer.Option(help="optimiser steps (default: the config's)")] = None,
    config: Annotated[str, typer.Option(help="further CFGTrainConfig options as JSON, e.g. '{\"lr\": 1e-4}'")] = "{}",
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="continue from the latest checkpoint in OUT")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the UNet (CUDA only)")] = False,
    log_dir: Annotated[Optional[Path], typer.Option(help="write the TensorBoard loss curve here (needs "
                                                         "pip install 'diffbalance[tensorboard]')")] = None,
) -> None:
    """Train the CFG generator; a later `rebalance --method cfg --params '{"checkpoint": "OUT"}'` samples it."""
    from diffbalance.experiment.generator import train_generator_for
    from diffbalance.generate.cfg.config import CFGTrainConfig
    from diffbalance.generate.cfg.generator import GENERATOR_FILE
    from diffbalance.imbalance.subset import ImbalanceConfig
    from diffbalance.infra.tensorboard import scalar_log

    options = json_object(config, "--config", '{"lr": 1e-4}')
    options = {**options, "model_size": size, "seed": seed, **({"train_steps": steps} if steps is not None else {})}
    train_config = CFGTrainConfig.from_dict(options, path="--config")
    imbalance = ImbalanceConfig.from_dict({"profile": profile, "n_min": n_min,
                                           **({"ratio": ratio} if ratio is not None else {})}, path="train-generator")
    data = DataConfig.from_dict({"name": dataset, "root": root}, path="train-generator")
    with scalar_log(log_dir) as scalars:  # a missing tensorboard package fails here, before training
        final = train_generator_for(data, imbalance, train_config, out, device, resume=resume, compile=compile)
        if scalars is not None:  # the curve generator.json holds: generator/loss, generator/lr by step
            scalars.write("generator", json.loads((final / GENERATOR_FILE).read_text()).get("history", []), "step")
    say(f"generator written to {final}")
