"""`diffbalance make-lt`: cut a long-tailed (imbalanced) training set out of a balanced dataset, as image folders.

Writes OUT/train/<class>/NNNNN.png (the imbalanced train split), OUT/test/<class>/NNNNN.png (the full test split)
and OUT/counts.json, all at once: a failure leaves no OUT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from diffbalance.cli.app import app
from diffbalance.data.sources import DataConfig, describe_sources
from diffbalance.imbalance.export import CUT_PROFILES, make_lt
from diffbalance.imbalance.subset import SELECTIONS, ImbalanceConfig
from diffbalance.infra.errors import DiffbalanceError


def parse_order(text: str | None) -> tuple[str, ...] | None:
    """'9,8,7' or 'truck,ship' → a tuple of items (resolved against the class names once the data is loaded)."""
    if text is None or not text.strip():
        return None
    items = tuple(item.strip() for item in text.split(","))
    if "" in items:
        raise DiffbalanceError(f"--order {text!r} has an empty item", "list classes separated by commas, e.g. 9,8,7")
    return items


@app.command("make-lt")
def make_lt_command(
    out: Annotated[Path, typer.Option(help="output folder: OUT/train, OUT/test (PNG ImageFolders), OUT/counts.json")],
    profile: Annotated[str, typer.Option(help=" | ".join(CUT_PROFILES))],
    dataset: Annotated[str, typer.Option(help=describe_sources())] = "fashion-mnist",
    root: Annotated[Optional[str], typer.Option(help="folder with the dataset's files (default: search)")] = None,
    test_root: Annotated[Optional[str], typer.Option(help="folder datasets: separate test folder")] = None,
    image_size: Annotated[int, typer.Option(help="folder datasets: images resized to this size")] = 32,
    channels: Annotated[int, typer.Option(help="folder datasets: 3 = RGB, 1 = grayscale")] = 3,
    n_min: Annotated[Optional[int], typer.Option(help="linear: images of the smallest class")] = None,
    n_max: Annotated[Optional[int], typer.Option(help="exponential/step: images of the largest class")] = None,
    ratio: Annotated[Optional[float], typer.Option(help="exponential/step: largest / smallest (default 10)")] = None,
    minority_fraction: Annotated[float, typer.Option(help="step: fraction of minority classes")] = 0.5,
    selection: Annotated[str, typer.Option(help=f"{' | '.join(SELECTIONS)}: per class the first n in original "
                                                "order, or a seeded random n")] = "first",
    seed: Annotated[int, typer.Option(help="seed of --selection random")] = 0,
    order: Annotated[Optional[str], typer.Option(help="classes from fewest to most images, e.g. 9,8,7,...")] = None,
    download: Annotated[bool, typer.Option(help="allow torchvision downloads")] = True,
    overwrite: Annotated[bool, typer.Option(help="replace an existing OUT")] = False,
) -> None:
    """Write an imbalanced (long-tailed) train split and the full test split as PNG image folders."""
    options = {"profile": profile, "n_min": n_min, "n_max": n_max, "minority_fraction": minority_fraction,
               "selection": selection, "seed": seed, "order": parse_order(order),
               **({"ratio": ratio} if ratio is not None else {})}
    imbalance = ImbalanceConfig.from_dict(options)
    data = DataConfig.from_dict({"name": dataset, "root": root, "test_root": test_root, "image_size": image_size,
                                 "channels": channels, "download": download})
    record = make_lt(data, imbalance, out, overwrite=overwrite)
    train_counts = record["train_counts"]
    typer.echo(f"wrote {out}: train {sum(train_counts)} images {train_counts}, test {record['test_count']} images")
