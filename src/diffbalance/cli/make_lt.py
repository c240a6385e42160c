"""`diffbalance make-lt`: cut a long-tailed (imbalanced) training set out of a balanced dataset, as image folders.

Writes OUT/train/<class>/NNNNN.png (the imbalanced train split), OUT/test/<class>/NNNNN.png (the full test split)
and OUT/counts.json, all at once: a failure leaves no OUT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from diffbalance.cli.app import app
from diffbalance.errors import DiffbalanceError

LT_PROFILES = ("linear", "exponential", "step")


@dataclass(frozen=True)
class LongTailConfig:
    profile: str  # "linear" | "exponential" | "step"
    n_min: int | None = None  # linear: images kept by the smallest class (rank i keeps n_min·(i+1)); None = auto
    n_max: int | None = None  # exponential/step: images kept by the largest class; None = smallest class available
    ratio: float | None = None  # exponential/step: largest / smallest class count; None = 10
    minority_fraction: float = 0.5  # step: fraction of classes that are minorities
    selection: str = "first"  # "first" (original order, CIFAR-10-LT convention) | "random"
    seed: int = 0  # seed of selection="random"
    order: tuple[str, ...] | None = None  # classes (indices or names) from fewest to most images; None = 0..C-1

    def __post_init__(self):
        if self.profile not in LT_PROFILES:
            raise DiffbalanceError(f"unknown profile {self.profile!r}", f"use one of {', '.join(LT_PROFILES)}")
        if self.profile == "linear" and (self.n_max is not None or self.ratio is not None):
            raise DiffbalanceError(
                "--n-max/--ratio do not apply to --profile linear", "use --n-min, or another profile"
            )
        if self.profile != "linear" and self.n_min is not None:
            raise DiffbalanceError(f"--n-min does not apply to --profile {self.profile}", "use --n-max and --ratio")
        for name in ("n_min", "n_max"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DiffbalanceError(f"--{name.replace('_', '-')} {value} is below 1", "use a positive image count")
        if self.ratio is not None and self.ratio < 1:
            raise DiffbalanceError(f"--ratio {self.ratio} is below 1", "use a ratio ≥ 1 (largest / smallest class)")
        if not 0 < self.minority_fraction < 1:
            raise DiffbalanceError(f"--minority-fraction {self.minority_fraction} is outside (0, 1)", "use e.g. 0.5")
        if self.selection not in ("first", "random"):
            raise DiffbalanceError(f"unknown selection {self.selection!r}", "use first or random")


def parse_order(text: str | None) -> tuple[str, ...] | None:
    """'9,8,7' or 'truck,ship' → a tuple of items (resolved against the class names once the data is loaded)."""
    if text is None or not text.strip():
        return None
    items = tuple(item.strip() for item in text.split(","))
    if "" in items:
        raise DiffbalanceError(f"--order {text!r} has an empty item", "list classes separated by commas, e.g. 9,8,7")
    return items


def make_lt(data_config: Any, lt: LongTailConfig, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Load the train/test splits, cut the train split by `lt`, write `out` atomically; returns counts.json's record."""
    from diffbalance.atomic import atomic_path, write_json
    from diffbalance.data.image_folder import write_image_folder
    from diffbalance.data.sources import load_train_test
    from diffbalance.imbalance.subset import ImbalanceConfig, apply_profile

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DiffbalanceError(f"--out {out} is a file", "choose a folder path for --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DiffbalanceError(f"output folder {out} already exists", "choose another --out or pass --overwrite")
    train, test = load_train_test(data_config)
    order = None if lt.order is None else [train.class_index(c) for c in lt.order]
    train_lt = apply_profile(train, ImbalanceConfig(
        profile=lt.profile, n_min=lt.n_min, n_max=lt.n_max, ratio=10.0 if lt.ratio is None else lt.ratio,
        minority_fraction=lt.minority_fraction, selection=lt.selection, seed=lt.seed, order=tuple(order) if order else None,
    ))
    record = {
        "dataset": data_config.name,
        "profile": lt.profile,
        "params": {**asdict(lt), "order": order},
        "class_names": list(train.class_names),
        "train_counts": train_lt.counts(),
        "test_count": len(test),
        "test_counts": test.counts(),
        "source_train_counts": train.counts(),
        "data": data_config.to_dict(),
    }
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        write_image_folder(train_lt, tmp / "train")
        write_image_folder(test, tmp / "test")
        write_json(tmp / "counts.json", record)
    return record


@app.command("make-lt")
def make_lt_command(
    out: Annotated[Path, typer.Option(help="output folder: OUT/train, OUT/test (PNG ImageFolders), OUT/counts.json")],
    profile: Annotated[str, typer.Option(help="linear | exponential | step")],
    dataset: Annotated[str, typer.Option(help="cifar10 | fashion-mnist | folder")] = "fashion-mnist",
    root: Annotated[Optional[str], typer.Option(help="folder with the dataset's files (default: search)")] = None,
    test_root: Annotated[Optional[str], typer.Option(help="folder datasets: separate test folder")] = None,
    image_size: Annotated[int, typer.Option(help="folder datasets: images resized to this size")] = 32,
    channels: Annotated[int, typer.Option(help="folder datasets: 3 = RGB, 1 = grayscale")] = 3,
    n_min: Annotated[Optional[int], typer.Option(help="linear: images of the smallest class")] = None,
    n_max: Annotated[Optional[int], typer.Option(help="exponential/step: images of the largest class")] = None,
    ratio: Annotated[Optional[float], typer.Option(help="exponential/step: largest / smallest (default 10)")] = None,
    minority_fraction: Annotated[float, typer.Option(help="step: fraction of minority classes")] = 0.5,
    selection: Annotated[str, typer.Option(help="first (original order) | random")] = "first",
    seed: Annotated[int, typer.Option(help="seed of --selection random")] = 0,
    order: Annotated[Optional[str], typer.Option(help="classes from fewest to most images, e.g. 9,8,7,...")] = None,
    download: Annotated[bool, typer.Option(help="allow torchvision downloads")] = True,
    overwrite: Annotated[bool, typer.Option(help="replace an existing OUT")] = False,
) -> None:
    """Write an imbalanced (long-tailed) train split and the full test split as PNG image folders."""
    from diffbalance.data.sources import DataConfig

    lt = LongTailConfig(profile, n_min, n_max, ratio, minority_fraction, selection, seed, parse_order(order))
    data_config = DataConfig(
        name=dataset, root=root, test_root=test_root, image_size=image_size, channels=channels, download=download
    )
    record = make_lt(data_config, lt, out, overwrite=overwrite)
    train_counts = record["train_counts"]
    typer.echo(f"wrote {out}: train {sum(train_counts)} images {train_counts}, test {record['test_count']} images")
