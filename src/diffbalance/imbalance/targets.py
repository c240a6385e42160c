"""How many images to generate per class: a pure function of the counts and a named strategy,
in imbalanced-learn's manner (`sampling_strategy`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from diffbalance.infra.errors import DiffbalanceError, require_counts

Strategy = Literal["auto", "not majority", "not minority", "minority", "all"]  # imbalanced-learn's names
STRATEGIES: tuple[str, ...] = get_args(Strategy)


def resolve_class(key, class_names: Sequence[str]) -> int:
    if isinstance(key, int) and 0 <= key < len(class_names):
        return key
    if isinstance(key, str) and key in class_names:
        return list(class_names).index(key)
    if isinstance(key, str) and key.isdigit() and int(key) < len(class_names):
        return int(key)
    raise DiffbalanceError(f"unknown class {key!r} in sampling_strategy",
                           f"use one of {', '.join(class_names)} (or an index)")


def generation_counts(
    counts: Sequence[int], strategy: Strategy | float | Mapping = "auto", class_names: Sequence[str] | None = None
) -> list[int]:
    """Images to add per class (indexed by class).

    "auto" / "not majority" / "all": fill every class up to the largest count (the majority gets nothing).
    "not minority": fill every class except the smallest up to the largest (imbalanced-learn's meaning).
    "minority": fill only the smallest class up to the largest.
    float r in (0, 1]: fill each class up to r·max(counts) (imbalanced-learn's ratio n_minority / n_majority).
    {class: n}: fill that class up to n images; a value below the current count is an error.
    """
    counts = require_counts(counts, "counts")
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(counts))]
    n_max = max(counts)
    if isinstance(strategy, Mapping):
        add = [0] * len(counts)
        for key, want in strategy.items():
            c = resolve_class(key, names)
            if isinstance(want, bool) or not isinstance(want, (int, float)) or not math.isfinite(want) or want != int(want):
                raise DiffbalanceError(f"target {want!r} for class {names[c]} is not a whole number of images",
                                       "give every class an image count, e.g. {\"cat\": 5000}")
            if int(want) < counts[c]:
                raise DiffbalanceError(
                    f"target {want} for class {names[c]} is below its current {counts[c]} images",
                    "rebalancers only add images: give a target ≥ the current count",
                )
            add[c] = int(want) - counts[c]
        return add
    if isinstance(strategy, (int, float)) and not isinstance(strategy, bool):
        if not 0 < strategy <= 1:  # NaN fails this too
            raise DiffbalanceError(f"sampling_strategy ratio {strategy} outside (0, 1]",
                                   "give n_class / n_majority in (0, 1]")
        want = int(round(strategy * n_max))
        return [max(0, want - n) for n in counts]
    if strategy in ("auto", "not majority", "all"):
        return [n_max - n for n in counts]
    if strategy == "not minority":
        c = min(range(len(counts)), key=lambda i: counts[i])
        return [0 if i == c else n_max - n for i, n in enumerate(counts)]
    if strategy == "minority":
        c = min(range(len(counts)), key=lambda i: counts[i])
        return [n_max - n if i == c else 0 for i, n in enumerate(counts)]
    raise DiffbalanceError(
        f"unknown sampling_strategy {strategy!r}",
        f"use {', '.join(STRATEGIES)}, a ratio in (0, 1] or a {{class: count}} mapping",
    )
