"""The guided ε of a class-conditional UNet (paper eq. 8, `generate.guidance.guide`), built once per sampler:

    ε̃(x_t, c) = (1 + w)·ε_θ(x_t, c) − w·ε_θ(x_t, ∅)        ∅ = the null class (the UNet's last class embedding)

w is already Ho & Salimans' (the convention was resolved when the sampler was built). The conditional and null
halves go through the network in ONE forward of 2B images; w = 0 skips the null half.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DModel

from diffbalance.generate.guidance import guide


@dataclass(frozen=True, eq=False)
class GuidedEpsilon:
    """Callable ε̃(x_t, t, class_labels) → (B, C, H, W)."""

    unet: UNet2DModel  # ε_θ(x_t, t, c), eval mode
    null_class: int  # index of ∅
    guidance_w: float  # Ho & Salimans' w (eq. 8), ≥ 0; the rebalancers' guidance_w, its convention resolved

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        # x_t: (B, C, H, W) noisy images; t: scalar timestep shared by the batch; class_labels: (B,) int64
        if self.guidance_w == 0:  # eq. 8 reduces to ε(x, c)
            return self.unet(x_t, t, class_labels=class_labels).sample
        null = torch.full_like(class_labels, self.null_class)
        eps = self.unet(torch.cat([x_t, x_t]), t, class_labels=torch.cat([class_labels, null])).sample  # (2B, C, H, W)
        eps_cond, eps_uncond = eps.chunk(2)
        return guide(eps_cond, eps_uncond, self.guidance_w)
