"""The training loss of the class-conditional ε-network, as a pure function (EDM keeps its loss apart from the loop).

Paper eq. 7 (Ho et al. 2020) with label dropout (Ho & Salimans 2022):

    L = ‖ε − ε_θ(√ᾱ_t·x_0 + √(1−ᾱ_t)·ε, t, c̃)‖²,   t ~ U{0..T−1},  ε ~ N(0, I),
    c̃ = ∅ with probability p_uncond, else c

so one network learns both ε(x_t, c) and ε(x_t) = ε(x_t, ∅).

Under DDP every rank passes the whole global batch and the same generator, so every rank draws the same labels,
t and ε for all of it; the network then sees only this rank's `part` (distributed.local_slice). The mean over an
equal part, averaged over the ranks by DDP, is the mean over the global batch: the update does not depend on the
world size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ddpm_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,  # (B, C, H, W) clean images in [-1, 1], the whole global batch
    labels: torch.Tensor,  # (B,) int64 class indices
    null_class: int,  # index of ∅
    alphas_cumprod: torch.Tensor,  # (T,) ᾱ_t of the forward process, on x0's device
    p_uncond: float,
    generator: torch.Generator,
    part: slice = slice(None),  # the images this process evaluates (all of them without DDP)
) -> torch.Tensor:
    """Scalar eq. 7 loss over `part` of the batch. Draws, in this order and all from `generator`, for the whole
    batch: the dropped labels, t, then ε (a fixed order, so a run is reproducible and resumes bit-identically)."""
    device = x0.device
    drop = torch.rand(len(labels), generator=generator, device=device) < p_uncond
    labels = torch.where(drop, torch.full_like(labels, null_class), labels)  # label dropout → ∅
    t = torch.randint(0, len(alphas_cumprod), (len(x0),), generator=generator, device=device)
    eps = torch.randn(x0.shape, generator=generator, device=device)
    x0, labels, t, eps = x0[part], labels[part], t[part], eps[part]
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # a sample of q(x_t | x_0)
    return F.mse_loss(model(x_t, t, class_labels=labels).sample.float(), eps)
