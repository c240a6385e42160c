"""Training-time augmentation on whole batches of tensors on the device: no PIL, no per-image Python loop.

- Random crop (the CIFAR recipe of He et al. 2016): zero-pad by p, take an H×W window at an offset
  (dy, dx) ~ U{0..2p}² drawn per image:  out[n, c, i, j] = pad(x)[n, c, dy_n + i, dx_n + j].
- Horizontal flip: out[n, c, i, j] = x[n, c, i, W − 1 − j] for a Bernoulli(½) subset of the batch.
- Normalisation: x̂ = (x / 255 − μ_c) / σ_c with μ, σ the per-channel mean and std of the training set.
- Batch mixing, torchvision v2.MixUp / v2.CutMix (paper eqs. 1–2):
  x̃ = λ x_i + (1 − λ) x_j or
  x̃ = M ⊙ x_i + (1 − M) ⊙ x_j, ỹ = λ y_i + (1 − λ) y_j, λ ~ Beta(α, α), j = i − 1 (the batch rolled by one).
  A per-sample value v (a loss weight) of a mixed sample is mixed like the labels: ṽ = λ v_i + (1 − λ) v_j.

Offsets and flips come from an explicit `torch.Generator` (CPU, then moved to the device, so the CPU and GPU
draw the same numbers); mixing runs under a forked CPU RNG seeded per step, never the unseeded global RNG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from diffbalance.seeding import forked_rng


def channel_mean_std(images: torch.Tensor, chunk_size: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) in [0, 1] units, accumulated in float64 by chunks."""
    c = images.shape[1]
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


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) → float32 (x / 255 − μ) / σ, on the images' device."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255 - m) / s


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to H×W at a per-image random offset; 0 returns the input."""
    if padding == 0:
        return images
    offsets = torch.randint(0, 2 * padding + 1, (len(images), 2), generator=generator)  # (N, 2): dy, dx
    return crop_at(images, padding, offsets.to(images.device))


def crop_at(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """out[n, c, i, j] = pad(x)[n, c, dy_n + i, dx_n + j] for offsets (N, 2) of (dy, dx) in [0, 2p]."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (N, C, H + 2p, W + 2p), zeros
    rows = offsets[:, 0:1] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=images.device)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]  # (N, 1, 1)
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C): advanced indices come first
    return out.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def random_horizontal_flip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    flip = (torch.rand(len(images), generator=generator) < p).to(images.device)  # (N,)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def augment_batch(
    images: torch.Tensor, *, padding: int, horizontal_flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Crop then flip a uint8 batch; the generator is consumed in that order, so a seed fixes both."""
    images = random_crop(images, padding, generator)
    if horizontal_flip:
        images = random_horizontal_flip(images, generator)
    return images


def build_batch_mix(kind: str, alpha: float, num_classes: int) -> v2.Transform | None:
    """torchvision's MixUp, CutMix, or a 50/50 choice of the two; None for "none"."""
    if kind == "none":
        return None
    mixup = v2.MixUp(alpha=alpha, num_classes=num_classes)
    cutmix = v2.CutMix(alpha=alpha, num_classes=num_classes)
    return {"mixup": mixup, "cutmix": cutmix, "mixup_or_cutmix": v2.RandomChoice([mixup, cutmix])}[kind]


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
