"""The validation split: real images of every class held out of the imbalanced training set before anything is
fitted. Generators, filters and classifiers never see them; every choice (guidance scale, which method is "best")
is made on them, never on the test set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffbalance.infra.configs import Config
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.seeding import derive_seed, generator


@dataclass(frozen=True)
class ValidationConfig(Config):
    per_class: int | None = None  # images held out of every class (at most half of a class, so training keeps ≥ half)
    fraction: float | None = None  # or this fraction of every class (at least 1 image, at most half)
    seed: int = 0  # which images: a seeded random choice within each class

    def validate(self) -> None:
        self.require((self.per_class is None) != (self.fraction is None), "per_class",
                     "set, or fraction set, but not both")
        self.require(self.per_class is None or self.per_class >= 1, "per_class", "a positive image count")
        self.require(self.fraction is None or 0 < self.fraction <= 0.5, "fraction", "in (0, 0.5]")

    def held_out(self, count: int) -> int:
        """Images held out of a class of `count` images: per_class or ⌈fraction·count⌉, at most ⌊count/2⌋."""
        want = self.per_class if self.per_class is not None else -int(-self.fraction * count // 1)
        return max(0, min(want, count // 2))


def split_validation(data: ImageSet, cfg: ValidationConfig | None) -> tuple[ImageSet, ImageSet | None]:
    """(training part, validation part) of `data`; (data, None) without a validation section. Both keep the
    original order within each class; the choice of held-out images is seeded per class."""
    if cfg is None:
        return data, None
    held = []
    for c, count in enumerate(data.counts()):
        idx = torch.nonzero(data.labels == c).flatten()
        order = torch.randperm(len(idx), generator=generator(derive_seed(cfg.seed, "validation", c)))
        held.append(idx[order[: cfg.held_out(count)]])
    val_idx = torch.sort(torch.cat(held)).values
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[val_idx] = False
    train = data.subset(torch.nonzero(keep).flatten(), source=f"{data.source} [training part]")
    val = data.subset(val_idx, source=f"{data.source} [validation part]")
    return train, val
