"""Sampling the class-conditional model: `sample` is a pure function (EDM's `edm_sampler` shape), `CFGSampler` the
setup resolved once (scheduler kind, steps, guided ε with w in Ho's convention) that turns seeds into images.

Samplers, all built by `generate.schedulers.make_scheduler` over the training forward process only:
    ddpm   ancestral, all T steps (paper-faithful; Ho et al. 2020 Alg. 2), x̂_0 clipped
    ddim   η = 0, deterministic (Song et al. 2021), trailing timesteps, ε re-derived from the clipped x̂_0
    dpmpp  DPM-Solver++(2M) (Lu et al. 2022), an ODE solver, ~20 steps
    dpmpp-sde  its SDE variant: stochastic like DDPM, ~20 steps. At the paper's strong guidance (w = 7.5) the
           deterministic solvers (ddim, dpmpp) lose class consistency that ancestral DDPM keeps; the stochastic
           variant keeps it (benchmarks/sampling.py), so it is the cfg rebalancer's default.
Image k's initial noise and every per-step noise draw come from its own torch.Generator seeded with seeds[k], on
the model's device (EDM's per-image seeds): image k is the same at any batch size. On the CPU these are the CPU
generators diffbalance has always used (the same images as before); on CUDA they are CUDA generators (Philox), so
the noise is drawn where it is used, but a GPU image is not the CPU image of the same seed.

Speed without changing a CPU image: the scheduler keeps its timesteps and coefficients on the host, so nothing
in the loop waits for the GPU (the only sync is the copy of the finished images); the network gets its timestep
from one device copy of the schedule; DPM-Solver's thresholding at ±1 is a clamp, not a per-step quantile
(generate.schedulers). `bf16=True` runs ε_θ under bf16 autocast on CUDA (the CPU stays fp32); eq. 8 and the
scheduler still run in fp32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from diffbalance.infra.device import fast_gpu_path
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.cfg.config import Sampler
from diffbalance.generate.cfg.guidance import GuidedEpsilon
from diffbalance.generate.cfg.unet import crop_images, null_class, pad_images, to_model_range, unet_sample_size
from diffbalance.generate.schedulers import forward_process, make_scheduler
from diffbalance.infra.seeding import generator

STOCHASTIC = ("ddpm", "dpmpp-sde")  # samplers that draw fresh noise at every step
# x̂_0 is clipped to [-1, 1] by every sampler (for DPM-Solver: dynamic thresholding with max 1, i.e. a clamp): near
# t = T of the cosine schedule ᾱ_t ≈ 0 and the unclipped x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t explodes into speckle
SCHEDULER_OPTIONS: dict[str, dict[str, Any]] = {
    "ddpm": {"clip_sample": True},
    "ddim": {"clip_sample": True, "timestep_spacing": "trailing"},
    "dpmpp": {"solver_order": 2, "thresholding": True, "sample_max_value": 1.0},
    "dpmpp-sde": {"solver_order": 2, "thresholding": True, "sample_max_value": 1.0},
}
# DDIM re-derives ε from the clipped x̂_0 (as GLIDE): a strongly guided ε̃ otherwise saturates
STEP_OPTIONS: dict[str, dict[str, Any]] = {"ddim": {"eta": 0.0, "use_clipped_model_output": True}}

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # ε̃(x_t, t, class_labels)


def make_cfg_scheduler(sampler: Sampler, noise_schedule: Mapping[str, Any]):
    """A new scheduler for `sampler` over the forward process of `noise_schedule` (any scheduler config)."""
    return make_scheduler(sampler, forward_process(noise_schedule), **SCHEDULER_OPTIONS[sampler])


def sampling_steps(sampler: Sampler, num_inference_steps: int | None, num_train_timesteps: int) -> int:
    """Denoising steps actually run: ddpm always runs all T (paper-faithful), the others `num_inference_steps`."""
    if sampler == "ddpm" or num_inference_steps is None:
        return int(num_train_timesteps)
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise DiffbalanceError(f"num_inference_steps={num_inference_steps} is out of range for a generator with "
                               f"T = {num_train_timesteps}", f"use 1..{num_train_timesteps}, e.g. 20")
    return int(num_inference_steps)


def image_generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One generator per image, on `device`: image k's noise depends on seeds[k] alone."""
    return [generator(s, device) for s in seeds]


def initial_latents(gens: Sequence[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """x_T ~ N(0, I), image k from gens[k] alone: (B, *shape) on the generators' device."""
    return torch.stack([torch.randn(shape, generator=g, device=g.device) for g in gens])


@torch.no_grad()
def sample(
    eps: EpsFn,
    latents: torch.Tensor,  # (B, C, H, W) x_T ~ N(0, I), or x_t at timesteps[start_step]; on the model's device
    class_labels: torch.Tensor,  # (B,) int64
    scheduler,  # a fresh diffusers scheduler with its timesteps set
    gens: Sequence[torch.Generator] | None = None,  # per-image generators, for stochastic samplers
    start_step: int = 0,  # > 0: `latents` is already x_t at scheduler.timesteps[start_step] (SDEdit / img2img)
    **step_options: Any,  # extra arguments of scheduler.step (e.g. DDIM's eta)
) -> torch.Tensor:
    """x_0 (B, C, H, W) in the model's range [-1, 1], by the scheduler's reverse process driven by ε̃ from
    timesteps[start_step] on. Give the scheduler its timesteps on the CPU: its step arithmetic then stays on the
    host and never waits for the GPU."""
    if gens is not None:
        step_options["generator"] = list(gens)  # per-step noise drawn image by image (randn_tensor with a list)
    x = latents * scheduler.init_noise_sigma if start_step == 0 else latents
    net_timesteps = to_device(scheduler.timesteps, latents.device)  # the network's t, indexed on the device
    for i in range(start_step, len(scheduler.timesteps)):
        t = scheduler.timesteps[i]
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(eps(x_in, net_timesteps[i], class_labels), t, x, **step_options).prev_sample
    return x


def start_step(steps: int, strength: float) -> int:
    """The first of `steps` denoising steps that a start at `strength` runs (diffusers' img2img rule: the last
    int(steps · strength) steps run; strength 1 runs them all, a strength below 1/steps none)."""
    return steps - min(int(steps * strength), steps)


def noised(x0: torch.Tensor, noise: torch.Tensor, scheduler, start: int) -> torch.Tensor:
    """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε at t = timesteps[start] (the forward process q(x_t | x_0), Ho et al. eq. 4),
    through the scheduler's own `add_noise` (DPM-Solver's σ-parametrisation included)."""
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)  # multistep solvers index their σ from here
    t = scheduler.timesteps[start : start + 1].repeat(len(x0))
    return scheduler.add_noise(x0, noise, t.to(x0.device))


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` on `device`, copied to a GPU from pinned memory without waiting for it (no host sync)."""
    if device.type != "cuda" or x.device == device:
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → {0..255}, on the CPU."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


@dataclass(frozen=True, eq=False)
class CFGSampler:
    """Everything about sampling decided once: call it with class labels and seeds to get uint8 images."""

    eps: GuidedEpsilon  # ε̃ with w in Ho's convention
    noise_schedule: dict[str, Any]  # the training forward process
    sampler: Sampler
    steps: int  # denoising steps actually run
    image_size: tuple[int, int] | None = None  # crop the UNet's (padded) size back to this; None keeps it
    bf16: bool = False  # ε_θ under bf16 autocast (CUDA only; the CPU stays fp32); eq. 8 and the scheduler in fp32
    codec: Any = None  # a latent generator's VAE (generate.cfg.latent.LatentCodec): samples are its latents
    channels: int = 3  # the dataset's channels (a latent generator decodes to RGB: grey is its mean)

    def __call__(self, class_labels: Sequence[int], seeds: Sequence[int], init_images: torch.Tensor | None = None,
                 strength: float = 1.0) -> torch.Tensor:
        """uint8 images (B, C, H, W) on the CPU, image k of class class_labels[k] from seeds[k] alone. With
        `init_images` (uint8 (B, C, h, w), the dataset's size) image k starts from init_images[k] noised to
        `strength` (SDEdit, Meng et al. 2022: the forward process to t = timesteps[start_step], then the remaining
        steps of the reverse process with the class label and guidance); a start that runs no step returns the
        source image itself."""
        unet = self.eps.unet
        device = next(unet.parameters()).device
        labels = to_device(torch.as_tensor(class_labels, dtype=torch.long), device)
        if len(labels) != len(seeds):
            raise ValueError(f"{len(labels)} labels for {len(seeds)} seeds")
        scheduler = make_cfg_scheduler(self.sampler, self.noise_schedule)  # new per batch: no state carried over
        scheduler.set_timesteps(self.steps)  # on the CPU (see `sample`)
        start = 0 if init_images is None else start_step(len(scheduler.timesteps), strength)
        if start == len(scheduler.timesteps):
            return init_images.cpu().clone()  # strength 0: no step runs, the source is the image
        gens = image_generators(seeds, device)
        latents = initial_latents(gens, (unet.config.in_channels, *unet_sample_size(unet)))  # ε for img2img
        if init_images is not None:
            x0 = self.codec.encode(init_images) if self.codec else to_model_range(to_device(init_images, device))
            latents = noised(pad_images(x0, unet_sample_size(unet)), latents, scheduler, start)
        eps = dataclasses.replace(self.eps, unet=Bf16(unet)) if self.bf16 and fast_gpu_path(device) else self.eps
        x = sample(eps, latents, labels, scheduler, gens if self.sampler in STOCHASTIC else None, start,
                   **STEP_OPTIONS.get(self.sampler, {}))
        if self.codec is not None:  # the latent of the image's size, decoded and cropped to it
            return self.codec.decode(crop_images(x, self.codec.latent_size(self.image_size)), self.image_size,
                                     self.channels)
        return to_uint8(x if self.image_size is None else crop_images(x, self.image_size))


@dataclass(frozen=True, eq=False)
class Bf16:
    """ε_θ under bf16 autocast, its output back in fp32: GuidedEpsilon then forms (1 + w)·ε_c − w·ε_u in fp32 (in
    bf16, 8 mantissa bits, that difference at w = 7.5 would lose a few per cent of ε)."""

    unet: UNet2DModel

    def __call__(self, *args: Any, **kwargs: Any) -> UNet2DOutput:
        with torch.autocast("cuda", torch.bfloat16):
            out = self.unet(*args, **kwargs).sample
        return UNet2DOutput(sample=out.float())


def build_sampler(
    unet: UNet2DModel,
    noise_schedule: Mapping[str, Any],
    sampler: Sampler,
    num_inference_steps: int | None,
    guidance_w: float,
    image_size: tuple[int, int] | None = None,
    bf16: bool = False,
    codec: Any = None,
    channels: int = 3,
) -> CFGSampler:
    """A CFGSampler for `unet` (eval mode, on its device) with Ho's `guidance_w` (eq. 8); `bf16` on CUDA only."""
    steps = sampling_steps(sampler, num_inference_steps, int(noise_schedule["num_train_timesteps"]))
    return CFGSampler(GuidedEpsilon(unet, null_class(unet), float(guidance_w)), dict(noise_schedule), sampler, steps,
                      None if image_size is None else tuple(image_size), bool(bf16), codec, int(channels))
