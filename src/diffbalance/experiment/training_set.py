"""What a classifier of a method trains on: the real images and the method's fill, as its recipe asks.

    plain          real + fill, the fill marked synthetic (synthetic_weight, prior: real and cRT read the mark)
    soft labels    `soft_label_gamma`: translated fill images on Diff-Mix's soft labels (below)
    swap           `swap_share`: real + oversampled copies (oversampling itself), the fill a pool that generated images
                   are swapped in from per sample (classify.swap); the fill's images keep their class's hard label

Diff-Mix's soft labels for translated fill images (Wang et al. 2024, "Enhance image classification via
inter-class image mixup with diffusion model").

An image translated from a real image of class a toward class c at strength s (`init: translate`) keeps part of its
source: it is trained on the label
    y = s^γ · onehot(c) + (1 − s^γ) · onehot(a)
(γ = `train.soft_label_gamma`; γ = 0, or no translation, is the hard label onehot(c): the lever's zero point). Real
images, copies and images generated from noise or from a real image of their own class keep hard labels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffbalance.classify.config import TrainConfig
from diffbalance.data.imageset import ImageSet
from diffbalance.rebalance.registry import build_rebalancer
from diffbalance.rebalance.store import read_manifest


def training_inputs(real: ImageSet, fills: ImageSet, recipe: TrainConfig, fill_dir: Path | None,
                    sampling_strategy, random_state: int) -> tuple[ImageSet, dict]:
    """(training set, `train_classifier` keyword arguments: synthetic, targets, swap_pool) for `recipe` on the real
    images + `fills` (whose folder `fill_dir` holds the manifest soft labels read); `sampling_strategy` and
    `random_state` make the copies a swap run trains on (the oversample fill the method's own seed would make)."""
    if recipe.swap_share > 0 and len(fills):
        copies = oversampled_copies(real, sampling_strategy, random_state)
        train = real.concat(copies, source=f"{real.source} + oversampled copies") if len(copies) else real
        synthetic = torch.arange(len(train)) >= len(real)
        return train, {"synthetic": synthetic, "targets": None, "swap_pool": fills}
    train = real.concat(fills, source=f"{real.source} + fill") if len(fills) else real
    synthetic = torch.arange(len(train)) >= len(real)  # every fill image counts as added (copies too)
    targets = None
    if recipe.soft_label_gamma and len(fills) and fill_dir is not None:
        targets = fill_targets(real.labels, fills.labels, fill_dir, train.num_classes, recipe.soft_label_gamma)
    return train, {"synthetic": synthetic, "targets": targets, "swap_pool": None}


def oversampled_copies(real: ImageSet, sampling_strategy, random_state: int) -> ImageSet:
    """The images `oversample` adds to `real` (same sampling strategy and seed: the same copies as its fill)."""
    reb = build_rebalancer("oversample", {"sampling_strategy": sampling_strategy, "random_state": random_state})
    reb.fit(real)
    todo = reb.sampling_strategy_
    if not todo:
        return real.subset(torch.zeros(0, dtype=torch.long))
    rows = torch.cat([reb.copy_sources(c, reb.image_seeds(c, range(n))) for c, n in todo.items()])
    return real.subset(rows, source=f"{real.source} [oversampled copies]")


def fill_targets(real_labels: torch.Tensor, fill_labels: torch.Tensor, fill_folder: Path, num_classes: int,
                 gamma: float) -> torch.Tensor:
    """(N_real + N_fill, K) float32 class probabilities for real images followed by a fill (images in class, index
    order, as `rebalance.store.load_fill` reads them), from the fill's manifest (source class and strength)."""
    targets = torch.nn.functional.one_hot(torch.cat([real_labels, fill_labels]), num_classes).to(torch.float32)
    records = sorted((r for r in read_manifest(fill_folder) if "class_index" in r),
                     key=lambda r: (r["class_index"], r["index"]))
    if len(records) != len(fill_labels):
        raise ValueError(f"fill {fill_folder} lists {len(records)} images for {len(fill_labels)} loaded")
    offset = len(real_labels)
    for k, r in enumerate(records):
        source = r.get("source_class")
        if source is None or gamma == 0 or source == r["class_index"]:
            continue
        keep = float(r["strength"]) ** gamma  # the target class's weight
        targets[offset + k] = 0.0
        targets[offset + k, r["class_index"]] = keep
        targets[offset + k, source] += 1.0 - keep
    return targets
