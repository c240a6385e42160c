"""Classifier-free guidance: one knob, one convention, eq. 8 written once (Ho & Salimans 2022; paper eq. 8):

    ε̃(x_t, c) = (1 + w)·ε_θ(x_t, c) − w·ε_θ(x_t, ∅)

`w` is Ho & Salimans' guidance weight (w = 0: the plain conditional model). Stable Diffusion writes the same thing
as ε_u + s·(ε_c − ε_u) with s = 1 + w. Every diffusion rebalancer takes `guidance_w` and `guidance_convention`
("ho": the number is w; "sd": the number is s), so the paper's "7.5" can be read either way; the convention is
resolved once, when the sampler is built, and every image records the number, its convention and the resolved w.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

Convention = Literal["ho", "sd"]  # "ho": Ho & Salimans' w (paper eq. 8) | "sd": Stable Diffusion's s = 1 + w
GUIDANCE_EXPECTED = "≥ 0 as Ho's w (≥ 1 as Stable Diffusion's s with guidance_convention sd)"


def ho_weight(value: float, convention: Convention = "ho") -> float:
    """Ho & Salimans' w from a guidance number given in `convention`."""
    return float(value) - 1.0 if convention == "sd" else float(value)


def sd_scale(value: float, convention: Convention = "ho") -> float:
    """Stable Diffusion's s = 1 + w (diffusers' `guidance_scale`) from a number given in `convention`."""
    return float(value) if convention == "sd" else 1.0 + float(value)


def guide(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Paper eq. 8 with Ho's w: (1 + w)·ε(x, c) − w·ε(x)."""
    return (1 + w) * eps_cond - w * eps_uncond


def guidance_record(value: float, convention: Convention) -> dict[str, Any]:
    """What every generated image records about its guidance."""
    return {"guidance_w": value, "guidance_convention": convention, "guidance_w_ho": ho_weight(value, convention)}
