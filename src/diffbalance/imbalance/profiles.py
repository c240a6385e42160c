"""Imbalance profiles: how many images each class keeps. Pure functions of (counts available, parameters).

`order` lists class indices from the class that keeps the fewest images to the one that keeps the most
(the paper's eq. 10 uses CIFAR order: airplane keeps 500, truck 5000).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

from diffbalance.infra.errors import DiffbalanceError, require_counts, require_type

Profile = Literal["linear", "exponential", "step", "none"]  # linear = paper eq. 10; none keeps every image
PROFILES: tuple[str, ...] = get_args(Profile)


def linear_counts(num_classes: int, n_min: int) -> list[int]:
    """Paper eq. 10: the class at rank i (0-based) keeps n_min·(i + 1) images (CIFAR-10: 500, 1000, …, 5000)."""
    return [n_min * (i + 1) for i in range(num_classes)]


def exponential_counts(num_classes: int, n_max: int, ratio: float) -> list[int]:
    """CIFAR-10-LT convention (Cui et al. 2019): rank i keeps ⌊n_max·ratio^(−(C−1−i)/(C−1))⌋, rank C−1 keeps n_max."""
    if num_classes == 1:
        return [n_max]
    return [int(n_max * ratio ** (-(num_classes - 1 - i) / (num_classes - 1))) for i in range(num_classes)]


def step_counts(num_classes: int, n_max: int, ratio: float, minority_fraction: float = 0.5) -> list[int]:
    """Step imbalance (Buda et al. 2018): the first ⌈fraction·C⌉ ranks keep n_max/ratio, the rest n_max."""
    n_minor = math.ceil(minority_fraction * num_classes)
    return [int(n_max / ratio) if i < n_minor else n_max for i in range(num_classes)]


def profile_counts(
    profile: str,
    available: Sequence[int],
    *,
    n_min: int | None = None,
    n_max: int | None = None,
    ratio: float = 10.0,
    minority_fraction: float = 0.5,
    order: Sequence[int] | None = None,
) -> list[int]:
    """Images to keep per class (indexed by class) under a named profile.

    linear: n_min·(rank + 1); n_min defaults to ⌊min(available) / C⌋.
    exponential / step: n_max (default min(available)) shrunk by `ratio` towards the first rank.
    none: keep everything.
    """
    require_type(profile, str, "profile", "a profile name (linear, exponential, step)")
    available = require_counts(available, "available")
    num_classes = len(available)
    order = list(range(num_classes)) if order is None else [int(c) for c in order]
    if sorted(order) != list(range(num_classes)):
        raise DiffbalanceError(f"class order {order} is not a permutation of 0..{num_classes - 1}", "list every class index once")
    if profile == "none":
        return list(available)
    if ratio < 1:
        raise DiffbalanceError(f"imbalance ratio {ratio} is below 1", "use a ratio ≥ 1 (largest / smallest class)")
    if profile == "linear":
        by_rank = linear_counts(num_classes, n_min if n_min is not None else min(available) // num_classes)
    elif profile == "exponential":
        by_rank = exponential_counts(num_classes, n_max if n_max is not None else min(available), ratio)
    elif profile == "step":
        by_rank = step_counts(num_classes, n_max if n_max is not None else min(available), ratio, minority_fraction)
    else:
        raise DiffbalanceError(f"unknown imbalance profile {profile!r}", f"use one of {', '.join(PROFILES)}")
    counts = [0] * num_classes
    for rank, cls in enumerate(order):
        counts[cls] = by_rank[rank]
    for cls, (keep, have) in enumerate(zip(counts, available)):
        if keep < 1:
            raise DiffbalanceError(f"profile {profile} leaves class {cls} with {keep} images", "raise n_min/n_max or lower the ratio")
        if keep > have:
            raise DiffbalanceError(
                f"profile {profile} asks class {cls} for {keep} images but only {have} exist",
                "lower n_min/n_max, or use a larger dataset",
            )
    return counts
