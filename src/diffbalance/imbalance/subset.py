"""Cut an imbalanced subset out of a balanced image set."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError
from diffbalance.seeding import generator

SELECTIONS = ("first", "random")


def kept_indices(labels: torch.Tensor, keep_counts: Sequence[int], selection: str = "first", seed: int = 0) -> torch.Tensor:
    """Indices (ascending) of the images kept: per class the first n in original order (CIFAR-10-LT convention)
    or a seeded random n."""
    if selection not in SELECTIONS:
        raise DiffbalanceError(f"unknown selection {selection!r}", f"use one of {', '.join(SELECTIONS)}")
    gen = generator(seed)
    kept = []
    for cls, n in enumerate(keep_counts):
        idx = torch.nonzero(labels == cls).flatten()
        if selection == "random":
            idx = idx[torch.randperm(len(idx), generator=gen)]
        kept.append(idx[:n])
    return torch.sort(torch.cat(kept)).values


def make_imbalanced(
    data: ImageSet, keep_counts: Sequence[int], selection: str = "first", seed: int = 0, profile: str = ""
) -> ImageSet:
    idx = kept_indices(data.labels, keep_counts, selection, seed)
    out = data.subset(idx, source=f"{data.source} [{profile or 'subset'}]")
    out.meta.update({"profile": profile, "selection": selection, "selection_seed": seed, "kept_indices_count": len(idx)})
    return out
