"""Training-time augmentation on whole batches of tensors on the device: no PIL, no per-image Python loop.

- Random crop (the CIFAR recipe of He et al. 2016): zero-pad by p, take an H×W window at an offset
  (dy, dx) ~ U{0..2p}² drawn per image:  out[n, c, i, j] = pad(x)[n, c, dy_n + i, dx_n + j].
- Horizontal flip: out[n, c, i, j] = x[n, c, i, W − 1 − j] for a Bernoulli(½) subset of the batch.
- Normalisation: x̂ = (x / 255 − μ_c) / σ_c with μ, σ the per-channel mean and std of the training set.
- Cutout (DeVries & Taylor 2017, "Improved regularization of CNNs with Cutout"): zero an L×L square (clipped at
  the border) centred at a uniform pixel (cy, cx) of each normalised image, so the hole holds the mean colour.
- Batch mixing, torchvision v2.MixUp / v2.CutMix (paper eqs. 1–2):
  x̃ = λ x_i + (1 − λ) x_j or
  x̃ = M ⊙ x_i + (1 − M) ⊙ x_j, ỹ = λ y_i + (1 − λ) y_j, λ ~ Beta(α, α), j = i − 1 (the batch rolled by one).
  A per-sample value v (a loss weight) of a mixed sample is mixed like the labels: ṽ = λ v_i + (1 − λ) v_j.

Offsets, flips and cutout centres come from an explicit `torch.Generator` on the images' device (drawn there, so
a training step never copies random numbers from the host and never waits for the GPU; a CPU run draws exactly
what it drew before this rule). Mixing draws only scalars (λ, a box, MixUp-or-CutMix), which reach the kernels
as arguments, not as copied tensors: it runs under a forked CPU RNG seeded per step, never the unseeded global
RNG, so a mixed run draws the same λ on the CPU and on the GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from diffbalance.infra.seeding import forked_rng


def channel_mean_std(images: torch.Tensor, chunk_size: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) in [0, 1] units, accumulated in float64 by chunks (of
    at most 2^25 values: 256 MB, whatever the image size)."""
    c = images.shape[1]
    chunk_size = max(1, min(chunk_size, 2**25 // max(1, c * images.shape[2] * images.shape[3])))
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk_size):
        x = images[start : start + chunk_size].to(torch.float64).div_(255)  # (n, C, H, W)
        total += x.sum(dim=(0, 2, 3)).cpu()
        total_sq += x.square().sum(dim=(0, 2, 3)).cpu()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)  # a constant channel stays finite
    return mean.tolist(), std.tolist()


Part = tuple[int, slice] | None  # (rows of the whole batch, the rows at hand): one rank's share of a batch
Stats = list[float] | torch.Tensor  # per-channel values: a list, or a float32 (1, C, 1, 1) tensor (`stats_tensor`)


def stats_tensor(values: Stats, device: torch.device) -> torch.Tensor:
    """Per-channel μ or σ as a float32 (1, C, 1, 1) tensor on `device`: made once per run, so a training step does
    not copy them from the host again."""
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.float32).view(1, -1, 1, 1)
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def normalize(images: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """uint8 (N, C, H, W) → float32 (x / 255 − μ) / σ, on the images' device."""
    m, s = stats_tensor(mean, images.device), stats_tensor(std, images.device)
    return (images.to(torch.float32) / 255 - m) / s


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator, part: Part = None) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to H×W at a per-image random offset; 0 returns the input. `part`: the
    images are rows `part[1]` of a batch of `part[0]` (one rank's share): the whole batch's offsets are drawn, so
    every row gets the draw it gets in the whole batch."""
    if padding == 0:
        return images
    n, rows = part or (len(images), slice(None))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=generator.device)[rows]
    return crop_at(images, padding, offsets.to(images.device))  # offsets (N, 2): dy, dx


def crop_at(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """out[n, c, i, j] = pad(x)[n, c, dy_n + i, dx_n + j] for offsets (N, 2) of (dy, dx) in [0, 2p]."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (N, C, H + 2p, W + 2p), zeros
    rows = offsets[:, 0:1] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=images.device)  # (N, W)
    flat = rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]  # (N, H, W): positions in a padded image
    flat = flat.view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, flat).view(n, c, h, w)  # one gather, already (N, C, H, W)


def random_horizontal_flip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                           part: Part = None) -> torch.Tensor:
    """Mirror each image left-right with probability p (`part` as in `random_crop`)."""
    n, rows = part or (len(images), slice(None))
    flip = (torch.rand(n, generator=generator, device=generator.device) < p)[rows].to(images.device)  # (N,)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cutout(images: torch.Tensor, side: int, generator: torch.Generator, part: Part = None) -> torch.Tensor:
    """Zero a side×side square, clipped at the border, centred at a uniform pixel of each image; 0 returns the input.
    Rows [cy − ⌊L/2⌋, cy − ⌊L/2⌋ + L) and the same columns, so an interior hole is exactly L×L. `part` as in
    `random_crop`."""
    if side == 0:
        return images
    _, _, h, w = images.shape
    n, rows = part or (len(images), slice(None))
    cy = torch.randint(0, h, (n, 1), generator=generator, device=generator.device)[rows].to(images.device) - side // 2
    cx = torch.randint(0, w, (n, 1), generator=generator, device=generator.device)[rows].to(images.device) - side // 2
    rows = torch.arange(h, device=images.device)  # (H,)
    cols = torch.arange(w, device=images.device)  # (W,)
    in_rows = (rows >= cy) & (rows < cy + side)  # (N, H)
    in_cols = (cols >= cx) & (cols < cx + side)  # (N, W)
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (N, 1, H, W)
    return images.masked_fill(hole, 0)


def augment_batch(
    images: torch.Tensor, *, padding: int, horizontal_flip: bool, generator: torch.Generator, part: Part = None
) -> torch.Tensor:
    """Crop then flip a uint8 batch; the generator is consumed in that order, so a seed fixes both. `part`: the
    images are rows part[1] of a batch of part[0] (see `random_crop`)."""
    images = random_crop(images, padding, generator, part)
    if horizontal_flip:
        images = random_horizontal_flip(images, generator, part=part)
    return images


# `TrainConfig.batch_mix` name → (α, number of classes) → its torchvision transform (None: no mixing); the one list
BATCH_MIXES: dict[str, Callable[[float, int], v2.Transform | None]] = {
    "none": lambda alpha, k: None,
    "mixup": lambda alpha, k: v2.MixUp(alpha=alpha, num_classes=k),
    "cutmix": lambda alpha, k: v2.CutMix(alpha=alpha, num_classes=k),
    "mixup_or_cutmix": lambda alpha, k: v2.RandomChoice([v2.MixUp(alpha=alpha, num_classes=k),
                                                          v2.CutMix(alpha=alpha, num_classes=k)]),  # 50/50
}
BatchMix = Literal[tuple(BATCH_MIXES)]  # type: ignore[valid-type]


def build_batch_mix(kind: str, alpha: float, num_classes: int) -> v2.Transform | None:
    """torchvision's MixUp, CutMix, or a 50/50 choice of the two; None for "none"."""
    return BATCH_MIXES[kind](alpha, num_classes)


def mix_batch(
    transform: v2.Transform, images: torch.Tensor, labels: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a float batch (N, C, H, W) with int labels (N,) → (mixed images, soft labels (N, K)).

    torchvision draws λ, the box and the MixUp/CutMix choice from the global CPU RNG; we fork it and seed
    the fork with `seed` (derived from (run seed, step)), so the run is reproducible and the caller's RNG untouched.
    """
    with forked_rng(seed):  # the CPU RNG only (torchvision draws λ and the box there); CUDA's is not touched
        mixed, soft = transform(images, labels)
    return mixed, soft


def mix_values(transform: v2.Transform, images: torch.Tensor, values: torch.Tensor, seed: int) -> torch.Tensor:
    """λ v_i + (1 − λ) v_{i−1} (N,) for per-sample values v (N,), with the λ (and CutMix box, and MixUp/CutMix
    choice) that `mix_batch(transform, images, labels, seed)` draws.

    The transform runs again under the same seed on a one-channel view of the images (its draws depend on the batch
    and image size only) with v as column 0 of soft labels, which it mixes exactly as it mixes the class labels.
    """
    num_classes = _num_classes(transform)
    probe = torch.zeros(len(values), num_classes, dtype=torch.float32, device=images.device)  # (N, K)
    probe[:, 0] = values.to(probe)
    with forked_rng(seed):
        _, mixed = transform(images[:, :1], probe)
    return mixed[:, 0]


def _num_classes(transform: v2.Transform) -> int:
    """K of a MixUp/CutMix transform, or of the first one inside a RandomChoice (they all share K)."""
    inner = getattr(transform, "transforms", None)
    return (inner[0] if inner else transform).num_classes
