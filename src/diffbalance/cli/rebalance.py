"""`diffbalance rebalance`: fill the minority classes of an image folder with one method, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from diffbalance.cli.app import app, say
from diffbalance.cli.options import json_object, json_value, renamed_options
from diffbalance.imbalance.targets import STRATEGIES
from diffbalance.rebalance.registry import available_rebalancers


@app.command("rebalance")
def rebalance(
    folder: Annotated[str, typer.Argument(help="the imbalanced training set: an ImageFolder (<class>/<images>), "
                                               "NAME:SPLIT[:PROFILE=N] (e.g. cifar10:train:linear=500) or "
                                               "hf:PATH[:SPLIT]")],
    method: Annotated[str, typer.Option(help=f"rebalancer: {', '.join(available_rebalancers())}")],
    out: Annotated[Path, typer.Option(help="fill folder: PNG ImageFolder + manifest (resumed if present)")],
    sampling_strategy: Annotated[Optional[str], typer.Option(
        help=f"images per class after filling: {' | '.join(STRATEGIES)} | ratio in (0,1] | JSON {{class: n}} "
             "(default: auto)")] = None,
    target: Annotated[Optional[str], typer.Option(hidden=True, help="--sampling-strategy's name before 0.2")] = None,
    params: Annotated[str, typer.Option(help="the method's parameters as JSON")] = "{}",
    image_size: Annotated[Optional[int], typer.Option(
        help="make every image N×N (shorter side to N, centre crop); default: the images' own size when they "
             "share one, else the median shorter side (said in one line)")] = None,
    image_column: Annotated[Optional[str], typer.Option(
        help="hf: the Image column (default: the dataset's one Image feature)")] = None,
    label_column: Annotated[Optional[str], typer.Option(
        help="hf: the label column (default: its one ClassLabel feature, or a column named label)")] = None,
    channels: Annotated[int, typer.Option(help="3 = RGB, 1 = grayscale")] = 3,
    on_corrupt: Annotated[str, typer.Option(help="unreadable images: skip (with a one-line note) | error")] = "skip",
    seed: Annotated[int, typer.Option(help="base seed of the fill images")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Generate images until every class reaches its sampling strategy; writes OUT/<class>/*.png and manifest."""
    from diffbalance.rebalance.folder import rebalance_folder

    method_params = json_object(params, "--params", '{"alpha": 0.6}')
    given = renamed_options({"sampling_strategy": sampling_strategy, "target": target}, ("target",))
    strategy = parse_sampling_strategy(given.get("sampling_strategy", "auto"))
    fills = rebalance_folder(folder, method, out, params=method_params, sampling_strategy=strategy,
                             image_size=image_size, channels=channels, on_corrupt=on_corrupt, seed=seed, device=device,
                             image_column=image_column, label_column=label_column)
    h, w = fills.image_size
    say(f"{len(fills)} images of {h}×{w} written to {out} (per class: {fills.counts()})")


def parse_sampling_strategy(text: str):
    """A strategy name, a ratio, or a JSON mapping {class: images}."""
    if text in STRATEGIES:
        return text
    try:
        return float(text)
    except ValueError:
        return json_value(text, "--sampling-strategy", '{"cat": 5000}')
