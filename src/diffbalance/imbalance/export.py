"""`make_lt`: an imbalanced (long-tailed) training split and the full test split written as PNG image folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffbalance.infra.atomic import atomic_path, write_json
from diffbalance.data.image_folder import write_image_folder
from diffbalance.data.sources import DataConfig, load_train_test
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.imbalance.profiles import PROFILES
from diffbalance.imbalance.subset import ImbalanceConfig, apply_profile

CUT_PROFILES: tuple[str, ...] = tuple(p for p in PROFILES if p != "none")  # "none" would write the balanced set back


def make_lt(data: DataConfig, imbalance: ImbalanceConfig, out: Path | str, overwrite: bool = False) -> dict[str, Any]:
    """Load the splits, cut the train split by `imbalance`, write OUT/train, OUT/test and OUT/counts.json at once
    (a failure leaves no OUT); returns counts.json's record."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DiffbalanceError(f"--out {out} is a file", "choose a folder path for --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DiffbalanceError(f"output folder {out} already exists", "choose another --out or pass --overwrite")
    if imbalance.profile == "none":
        raise DiffbalanceError("profile none keeps the balanced set", f"use {', '.join(CUT_PROFILES)}")
    train, test = load_train_test(data)
    train_lt = apply_profile(train, imbalance)
    order = None if imbalance.order is None else [train.class_index(c) for c in imbalance.order]
    record = {
        "dataset": data.name,
        "profile": imbalance.profile,
        "params": {**imbalance.to_dict(), "order": order},
        "class_names": list(train.class_names),
        "train_counts": train_lt.counts(),
        "test_count": len(test),
        "test_counts": test.counts(),
        "source_train_counts": train.counts(),
        "data": data.to_dict(),
    }
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        write_image_folder(train_lt, tmp / "train")
        write_image_folder(test, tmp / "test")
        write_json(tmp / "counts.json", record)
    return record
