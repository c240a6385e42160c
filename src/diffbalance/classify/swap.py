"""Diff-Mix's per-sample swap: generated images swapped in for training samples on the fly, rarer classes more often.

Instead of adding a fixed fill, every training step replaces each sample i of class c of its batch, with probability
    p_c = share · (1 / (n_c + 1)) / max_k (1 / (n_k + 1))          (n_c: real training images of class c)
by an image of class c drawn from a pool of generated images (Wang et al. 2024, Diff-Mix: a tail-weighted
replacement probability ∝ 1/(n_c + 1)); the rarest class is swapped with probability `share`, a class ten times
larger about a tenth as often. share 0 trains on the set as given — with oversampled copies as that set, oversampling
itself (the lever's zero point). The draws (which samples, which pool image) come from (run seed, "swap", step), so a
run is the same at any world size and resumes exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.seeding import generator


def swap_probabilities(real_counts: Sequence[int], share: float) -> list[float]:
    """p_c of the module docstring for every class."""
    inverse = [1.0 / (n + 1) for n in real_counts]
    top = max(inverse)
    return [share * v / top for v in inverse]


@dataclass
class SwapPool:
    """Generated images by class, on the device, and each class's swap probability."""

    images: torch.Tensor  # (M, C, H, W) uint8, sorted by class
    start: torch.Tensor  # (K,) int64: where class c's images begin in `images`
    count: torch.Tensor  # (K,) int64: how many class c has (0: its samples are never swapped)
    prob: torch.Tensor  # (K,) float32: p_c

    @classmethod
    def build(cls, pool: ImageSet, prob: Sequence[float], device: torch.device) -> SwapPool:
        order = torch.sort(pool.labels, stable=True).indices
        count = torch.bincount(pool.labels, minlength=len(prob))
        start = torch.cumsum(count, 0) - count
        return cls(pool.images[order].to(device), start.to(device), count.to(device),
                   torch.tensor(prob, dtype=torch.float32, device=device))


def swap_batch(pool: SwapPool, images: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 images (B, C, H, W) with the samples the draws of `seed` pick replaced by pool images of their class."""
    g = generator(seed)
    u, r = torch.rand(len(labels), generator=g), torch.rand(len(labels), generator=g)  # (B,) each, on the CPU
    u, r = u.to(labels.device), r.to(labels.device)
    count = pool.count[labels]
    swap = (u < pool.prob[labels]) & (count > 0)  # (B,) bool
    if not bool(swap.any()):
        return images
    pick = pool.start[labels] + (r * count).long().clamp_max(count - 1).clamp_min(0)  # (B,) pool index per sample
    out = images.clone()
    out[swap] = pool.images[pick[swap]]
    return out
