"""Mixup-fill and CutMix-fill: new minority images made by mixing two real images of the same class.

The paper (eqs. 1–2) mixes pairs but does not say how mixed images *fill* a class. diffbalance's choice:
each fill image of class c mixes two distinct real images of class c, drawn uniformly with the image's
own seed, so its label stays c exactly (a hard label; Mixup/CutMix's soft label is 100 % c).
The mixing itself is torchvision's v2.MixUp / v2.CutMix (λ ~ Beta(α, α); for CutMix a box of area 1 − λ
from the second image, λ adjusted to the box actually pasted), run on the pair under a RNG forked and
seeded per image, so the global RNG is never touched. Defaults: Mixup α = 1.0 (the paper's value is
unreadable; 1.0 is Zhang et al.'s CIFAR-10 setting), CutMix α = 0.6 (the paper's setting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from diffbalance.rebalance.base import Rebalancer, register
from diffbalance.infra.configs import require
from diffbalance.infra.seeding import forked_rng, generator


def _pick_pair(pool: torch.Tensor, seed: int) -> tuple[int, int]:
    gen = generator(seed)
    if len(pool) == 1:
        return int(pool[0]), int(pool[0])
    a, b = torch.randperm(len(pool), generator=gen)[:2].tolist()
    return int(pool[a]), int(pool[b])


def mix_pair(transform: v2.Transform, x_a: torch.Tensor, x_b: torch.Tensor, seed: int) -> tuple[torch.Tensor, float]:
    """Mix two uint8 images (C, H, W) with a torchvision batch transform; returns (uint8 image, λ of x_a)."""
    batch = torch.stack([x_a, x_b]).float()  # (2, C, H, W); v2 pairs sample k with sample k−1: row 0 takes x_b
    labels = torch.tensor([0, 1])
    with forked_rng(seed):  # torchvision draws λ and the box from the global RNG
        mixed, soft = transform(batch, labels)
    return mixed[0].round().clamp(0, 255).to(torch.uint8), float(soft[0, 0])


@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class _MixFill(Rebalancer):
    alpha: float = 1.0  # Beta(α, α) parameter of λ

    def validate(self) -> None:
        super().validate()
        require(self.alpha > 0, "alpha", self.alpha, "positive (Beta(α, α) needs α > 0)")

    def _transform(self) -> v2.Transform:
        raise NotImplementedError

    def generate(self, class_index: int, seeds: Sequence[int]):
        pool = torch.nonzero(self.train_.labels == class_index).flatten()
        transform = self._transform()
        images, records = [], []
        for s in seeds:
            a, b = _pick_pair(pool, s)
            image, lam = mix_pair(transform, self.train_.images[a], self.train_.images[b], s)
            images.append(image)
            records.append({"source_indices": [a, b], "lam": round(lam, 6)})
        return torch.stack(images), records


@register(bad={"alpha": -1.0})
@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class MixupFill(_MixFill):
    """x̃ = λ·x_a + (1 − λ)·x_b (paper eq. 1) with x_a, x_b of the class being filled."""

    name = "mixup"
    alpha: float = 1.0

    def _transform(self):
        return v2.MixUp(alpha=self.alpha, num_classes=2)


@register(bad={"alpha": 0.0})
@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class CutMixFill(_MixFill):
    """x̃ = M ⊙ x_a + (1 − M) ⊙ x_b (paper eq. 2), a random box M, x_a, x_b of the class being filled."""

    name = "cutmix"
    alpha: float = 0.6

    def _transform(self):
        return v2.CutMix(alpha=self.alpha, num_classes=2)
