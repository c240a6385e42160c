"""How choices are validated, on training data only — never on the test set.

Two ways, one section (`validation:`):
    per_class / fraction   a held-out split: real images of every class held out of the imbalanced training set
                           before anything is fitted; generators, filters and classifiers never see them
    folds: K               stratified K-fold cross-validation over the whole imbalanced training set
                           (scikit-learn's StratifiedKFold, shuffled with `seed`): every class in every fold, the
                           rarest included, so each class needs at least K images; after the choice, the chosen
                           setting is trained on all images (GridSearchCV's refit=True contract)
Either way a choice is scored by `score` on the held-out part(s); balanced accuracy (the default) and macro-F1 weigh
every class alike, as imbalanced folds need. `selection_folds` gives both as a list of `Fold`s (a held-out split is
one fold), so what scores a choice never asks which way it was validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from diffbalance.infra.configs import Config
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.seeding import derive_seed, generator

Score = Literal["balanced_accuracy", "macro_f1", "accuracy"]


@dataclass(frozen=True)
class ValidationConfig(Config):
    per_class: int | None = None  # images held out of every class (at most half of a class, so training keeps ≥ half)
    fraction: float | None = None  # or this fraction of every class (at least 1 image, at most half)
    folds: int | None = None  # or stratified K-fold cross-validation over all training images (K ≥ 2)
    seed: int = 0  # which images: a seeded random choice within each class (the folds' shuffle)
    score: Score = "balanced_accuracy"  # what a choice is scored by on the held-out images: balanced_accuracy
    # (mean per-class recall), macro_f1, or accuracy (which imbalanced folds let the largest classes decide)
    seeds: tuple[int, ...] = (0,)  # folds only: quick-classifier seeds of the methods' own scores (each method
    # row is scored on every fold × seed to choose the verdict's best generative and non-generative method)
    train: dict = field(default_factory=dict)  # folds only: that quick classifier's recipe, on top of each method's
    max_images_per_class: int | None = None  # folds only: fill images per class when scoring an unswept
    # generative method (a cheaper proxy, as a sweep's cap); None = its whole fill
    generators: Literal["per_fold", "shared"] = "per_fold"  # folds only: train a generator on each fold's training
    # part (nothing of the held-out fold is seen: honest, K more generators), or share the one trained on all
    # training images (cheaper; it saw the held-out folds, so generated points' scores may be optimistic)

    def validate(self) -> None:
        given = [k for k in ("per_class", "fraction", "folds") if getattr(self, k) is not None]
        self.require(len(given) == 1, "per_class", "set, or fraction, or folds — exactly one of them")
        self.require(self.per_class is None or self.per_class >= 1, "per_class", "a positive image count")
        self.require(self.fraction is None or 0 < self.fraction <= 0.5, "fraction", "in (0, 0.5]")
        self.require(self.folds is None or self.folds >= 2, "folds", "a fold count of 2 or more")
        self.require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds",
                     "a list of distinct seeds")
        self.require(self.max_images_per_class is None or self.max_images_per_class >= 1, "max_images_per_class",
                     "a positive count or null")

    @property
    def cross_validated(self) -> bool:
        return self.folds is not None

    def held_out(self, count: int) -> int:
        """Images held out of a class of `count` images: per_class or ⌈fraction·count⌉, at most ⌊count/2⌋."""
        if self.folds is not None:
            return 0
        want = self.per_class if self.per_class is not None else -int(-self.fraction * count // 1)
        return max(0, min(want, count // 2))

    def describe(self) -> str:
        """One line for reports: how choices were validated and scored."""
        if self.folds is not None:
            gens = ("a generator per fold" if self.generators == "per_fold" else
                    "one generator for all folds (it saw the held-out folds)")
            return (f"stratified {self.folds}-fold cross-validation over the imbalanced training set (seed {self.seed}; "
                    f"{gens}), scored by {self.score.replace('_', ' ')}")
        part = f"{self.per_class} images per class" if self.per_class is not None else f"{self.fraction:g} of each class"
        return f"a held-out split of {part} (seed {self.seed}), scored by {self.score.replace('_', ' ')}"


@dataclass(frozen=True)
class Fold:
    """One way of scoring a choice: fit on `train`, score on `held` (real images `train` does not contain)."""

    index: int  # 0..K-1 (a held-out split is fold 0 of 1)
    count: int  # K
    train: ImageSet
    held: ImageSet

    @property
    def name(self) -> str:
        return f"fold{self.index}-of-{self.count}"


def split_validation(data: ImageSet, cfg: ValidationConfig | None) -> tuple[ImageSet, ImageSet | None]:
    """(training part, validation part) of `data`; (data, None) without a validation section or with folds (every
    image trains the final classifiers). Both keep the original order within each class; the choice of held-out
    images is seeded per class."""
    if cfg is None or cfg.folds is not None:
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


def check_folds(counts: list[int], class_names: tuple[str, ...] | list[str], cfg: ValidationConfig | None) -> None:
    """Every class fits in every fold (at least K images each): one line naming the rarest class otherwise."""
    if cfg is None or cfg.folds is None:
        return
    rarest = min(range(len(counts)), key=lambda c: counts[c])
    if counts[rarest] < cfg.folds:
        raise DiffbalanceError(
            f"class {class_names[rarest]!r} has {counts[rarest]} training images, fewer than validation.folds "
            f"{cfg.folds}: every class must be in every fold",
            f"set validation.folds to {max(2, counts[rarest])} or less, or hold out a split (per_class: N)"
            if counts[rarest] >= 2 else "give every class at least 2 images, or hold out a split (per_class: N)")


def selection_folds(train: ImageSet, validation: ImageSet | None, cfg: ValidationConfig | None) -> list[Fold]:
    """The folds every choice is scored on: K stratified folds of `train` (cross-validation), or the one held-out
    split (`train`, `validation`); [] without a validation section."""
    if cfg is None:
        return []
    if cfg.folds is None:
        return [Fold(0, 1, train, validation)]
    check_folds(train.counts(), train.class_names, cfg)
    splitter = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed % 2**32)
    labels = train.labels.numpy()
    out = []
    for k, (fit_idx, held_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fit_idx, held_idx = torch.from_numpy(np.sort(fit_idx)), torch.from_numpy(np.sort(held_idx))
        out.append(Fold(k, cfg.folds, train.subset(fit_idx, source=f"{train.source} [fold {k} training part]"),
                        train.subset(held_idx, source=f"{train.source} [fold {k} held out]")))
    return out
