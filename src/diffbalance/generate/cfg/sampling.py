"""Samplers as one pure function: a trained ε-network in, uint8 images out.

A diffusers scheduler is built fresh on every call from the training noise schedule (no state carried over):
    ddpm   DDPMScheduler, ancestral, all T steps (paper-faithful; Ho et al. 2020 Alg. 2)
    ddim   DDIMScheduler, η = 0, deterministic (Song et al. 2021)
    dpmpp  DPMSolverMultistepScheduler, DPM-Solver++(2M) (Lu et al. 2022), an ODE solver, ~20 steps
    dpmpp-sde  the same scheduler's SDE-DPM-Solver++(2M): stochastic like DDPM, ~20 steps. At the paper's strong
           guidance (w = 7.5) the deterministic solvers (ddim, dpmpp) lose class consistency that ancestral DDPM
           keeps; the stochastic variant keeps it (benchmarks/sampling.py), so it is the cfg rebalancer's default.
Image k's initial noise and every per-step noise draw come from its own torch.Generator seeded with seeds[k],
so image k is the same at any batch size (EDM's per-image seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from diffbalance.errors import DiffbalanceError
from diffbalance.generate.cfg.guidance import guided_epsilon
from diffbalance.generate.cfg.unet import crop_images, unet_sample_size
from diffbalance.seeding import generator

SAMPLERS = ("ddpm", "ddim", "dpmpp", "dpmpp-sde")
STOCHASTIC = ("ddpm", "dpmpp-sde")  # samplers that draw fresh noise at every step


def make_scheduler(sampler: str, noise_schedule: dict[str, Any]):
    """A new scheduler for `sampler` over the training forward process `noise_schedule`."""
    if sampler == "ddpm":
        return DDPMScheduler(**noise_schedule, clip_sample=True)
    if sampler == "ddim":
        return DDIMScheduler(**noise_schedule, clip_sample=True, timestep_spacing="trailing")
    if sampler in ("dpmpp", "dpmpp-sde"):
        # x̂_0 is clipped to [-1, 1] (dynamic thresholding with max 1), as ddpm/ddim clip it: near t = T of the
        # cosine schedule ᾱ_t ≈ 0 and the unclipped x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t explodes into speckle
        algorithm = "dpmsolver++" if sampler == "dpmpp" else "sde-dpmsolver++"
        return DPMSolverMultistepScheduler(**noise_schedule, algorithm_type=algorithm, solver_order=2,
                                           thresholding=True, sample_max_value=1.0)
    raise DiffbalanceError(f"sampler {sampler!r} is unknown", f"use one of {', '.join(SAMPLERS)}")


def sampling_steps(sampler: str, num_inference_steps: int | None, noise_schedule: dict[str, Any]) -> int:
    """Denoising steps actually run: ddpm always runs all T (paper-faithful), the others `num_inference_steps`."""
    if sampler == "ddpm" or num_inference_steps is None:
        return int(noise_schedule["num_train_timesteps"])
    if not 1 <= num_inference_steps <= noise_schedule["num_train_timesteps"]:
        raise DiffbalanceError(f"num_inference_steps {num_inference_steps} is out of range", "use 1..T, e.g. 20")
    return int(num_inference_steps)


@torch.no_grad()
def sample(
    unet: UNet2DModel,
    sampler: str,
    class_labels: Sequence[int] | torch.Tensor,
    seeds: Sequence[int],
    guidance_w: float,
    num_inference_steps: int | None,
    null_class: int,
    *,
    noise_schedule: dict[str, Any],
    guidance_convention: str = "ho",
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """uint8 images (B, C, H, W) on the CPU, image k of class class_labels[k] made from seeds[k] alone.

    image_size: crop the UNet's (padded) sample size back to this; None keeps the full sample size.
    """
    device = next(unet.parameters()).device
    labels = torch.as_tensor(class_labels, dtype=torch.long, device=device)
    if len(labels) != len(seeds):
        raise ValueError(f"{len(labels)} labels for {len(seeds)} seeds")
    scheduler = make_scheduler(sampler, noise_schedule)
    scheduler.set_timesteps(sampling_steps(sampler, num_inference_steps, noise_schedule), device=device)
    gens = [generator(s) for s in seeds]  # CPU generators: the same numbers on every device
    shape = (unet.config.in_channels, *unet_sample_size(unet))
    x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)  # (B, C, H, W) x_T ~ N(0, I)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        eps = guided_epsilon(unet, x_in, t, labels, null_class, guidance_w, guidance_convention)  # eq. 8
        # stochastic samplers draw per-step noise image by image from `gens` (randn_tensor with a generator list)
        step_kwargs = {"generator": gens} if sampler in STOCHASTIC else {}
        if sampler == "ddim":  # re-derive ε from the clipped x̂_0 (as GLIDE): a strongly guided ε̃ otherwise saturates
            step_kwargs = {"eta": 0.0, "use_clipped_model_output": True}
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    if image_size is not None:
        x = crop_images(x, image_size)
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()  # [-1, 1] → {0..255}
