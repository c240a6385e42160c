"""Diff-Mix's soft labels for translated fill images (Wang et al. 2024, "Enhance image classification via
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

from diffbalance.rebalance.store import read_manifest


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
