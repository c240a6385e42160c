"""Classifier-free guidance, written once (paper eq. 8; Ho & Salimans 2022):

    ε̃(x_t, c) = (1 + w)·ε_θ(x_t, c) − w·ε_θ(x_t, ∅)

`w` is Ho & Salimans' guidance weight (w = 0: plain conditional model). Stable Diffusion writes the same
thing as ε_u + s·(ε_c − ε_u) with s = 1 + w; `guidance_convention="sd"` takes s and converts it here, so
the paper's "7.5" can be read either way and every image records which one was used.
"""

from __future__ import annotations

import torch

from diffbalance.errors import DiffbalanceError

CONVENTIONS = ("ho", "sd")


def ho_weight(scale: float, convention: str = "ho") -> float:
    """Ho & Salimans' w from a guidance scale given in `convention` ("ho": w itself; "sd": s = 1 + w)."""
    if convention == "ho":
        return float(scale)
    if convention == "sd":
        return float(scale) - 1.0
    raise DiffbalanceError(f"guidance convention {convention!r} is unknown", "use 'ho' (w) or 'sd' (s = 1 + w)")


def guide(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float, convention: str = "ho") -> torch.Tensor:
    """Paper eq. 8: (1 + w)·ε(x, c) − w·ε(x)."""
    w = ho_weight(scale, convention)
    return (1 + w) * eps_cond - w * eps_uncond


def guided_epsilon(
    unet: torch.nn.Module,
    x_t: torch.Tensor,  # (B, C, H, W) noisy images
    t: torch.Tensor,  # scalar timestep shared by the batch
    class_labels: torch.Tensor,  # (B,) int64
    null_class: int,
    scale: float,
    convention: str = "ho",
) -> torch.Tensor:
    """ε̃ for a batch: the conditional and null halves go through the network in ONE forward of 2B images."""
    if ho_weight(scale, convention) == 0:  # eq. 8 reduces to ε(x, c): skip the null half
        return unet(x_t, t, class_labels=class_labels).sample
    null = torch.full_like(class_labels, null_class)
    eps = unet(torch.cat([x_t, x_t]), t, class_labels=torch.cat([class_labels, null])).sample  # (2B, C, H, W)
    eps_cond, eps_uncond = eps.chunk(2)
    return guide(eps_cond, eps_uncond, scale, convention)
