"""Cut an imbalanced subset out of a balanced image set."""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from diffbalance.infra.configs import Config, current_path
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError, require_counts, require_type
from diffbalance.imbalance.profiles import Profile, profile_counts
from diffbalance.infra.seeding import generator

Selection = Literal["first", "random"]  # first n in original order (CIFAR-10-LT convention) | a seeded random n
SELECTIONS: tuple[str, ...] = get_args(Selection)


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
    require_type(data, ImageSet, "data", "an ImageSet")
    keep_counts = require_counts(keep_counts, "keep_counts")
    idx = kept_indices(data.labels, keep_counts, selection, seed)
    out = data.subset(idx, source=f"{data.source} [{profile or 'subset'}]")
    out.meta.update({"profile": profile, "selection": selection, "selection_seed": seed, "kept_indices_count": len(idx)})
    return out


@dataclass(frozen=True)
class ImbalanceConfig(Config):
    """How the training set is cut (the `imbalance:` section of a run, and `make-lt`'s options)."""

    profile: Profile = "linear"  # linear = paper eq. 10
    n_min: int | None = None  # linear: images kept by the smallest class (rank i keeps n_min·(i+1)); None = auto
    n_max: int | None = None  # exponential/step: images kept by the largest class; None = smallest class available
    ratio: float = 10.0  # exponential/step: largest / smallest class
    minority_fraction: float = 0.5  # step: fraction of classes that are minority
    selection: Selection = "first"  # first n in original order (CIFAR-10-LT convention) | random
    order: tuple[int | str, ...] | None = None  # classes (indices or names) from fewest to most images; None = index order
    seed: int = 0  # seed of the random selection

    def validate(self) -> None:
        if self.profile == "linear" and (self.n_max is not None or self.ratio != 10.0):
            raise DiffbalanceError(f"{current_path('profile')}: n_max/ratio do not apply to profile linear",
                                   "use n_min, or another profile")
        if self.profile in ("exponential", "step") and self.n_min is not None:
            raise DiffbalanceError(f"{current_path('n_min')}: n_min does not apply to profile {self.profile}",
                                   "use n_max and ratio")
        for name in ("n_min", "n_max"):
            self.require(getattr(self, name) is None or getattr(self, name) >= 1, name, "a positive image count")
        self.require(1 <= self.ratio < math.inf, "ratio",
                     "≥ 1 and finite (largest / smallest class); a ratio below 1 is impossible")
        self.require(0 < self.minority_fraction < 1, "minority_fraction", "in (0, 1), e.g. 0.5")


def apply_profile(data: ImageSet, cfg: ImbalanceConfig) -> ImageSet:
    """The imbalanced subset of `data` that `cfg` describes (profile counts, then which images are kept)."""
    require_type(data, ImageSet, "data", "an ImageSet")
    require_type(cfg, ImbalanceConfig, "cfg", "an ImbalanceConfig (ImbalanceConfig.from_dict({...}) for a mapping)")
    order = None if cfg.order is None else [data.class_index(c) for c in cfg.order]
    keep = profile_counts(
        cfg.profile, data.counts(), n_min=cfg.n_min, n_max=cfg.n_max, ratio=cfg.ratio,
        minority_fraction=cfg.minority_fraction, order=order,
    )
    return make_imbalanced(data, keep, cfg.selection, cfg.seed, cfg.profile)
