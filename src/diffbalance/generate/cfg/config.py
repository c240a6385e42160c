"""Training configuration of the class-conditional diffusion model (one frozen config section, saved beside every
checkpoint). The noise schedule defaults to the paper's DDPM (linear β 1e-4…0.02, T = 1000); the other defaults
suit the CPU demo (tiny model, Fashion-MNIST, a few minutes on 2 cores), which also switches to the cosine schedule.
The batch defaults by model size: 32 for tiny (the CPU demo), 128 for the GPU sizes small and paper (DDPM's).

`to_dict()` is hashed into the name of an on-the-fly generator's folder (`cfg-generator-<key>`), compared by a
resume (train_config.json) and part of a cfg fill's identity: field names, defaults and order are part of that
contract. Options that change speed but not the weights (device, `compile`) are arguments of `train_generator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from diffbalance.generate.schedulers import BetaSchedule, sampler_names
from diffbalance.infra.configs import Config
from diffbalance.infra.errors import DiffbalanceError


# the largest image side the pixel-space UNets are sized for (their named sizes reach 4×4 at 32 px): a larger image
# needs a latent generator (ldm / ldm-img2img on a pretrained model) or a smaller image_size
MAX_PIXEL_SIDE = 64
Sampler = Literal[sampler_names("cfg")]  # type: ignore[valid-type]  # how a generator is sampled (generate.cfg.sampling)
Init = Literal["noise", "real", "translate"]  # where sampling starts (generate.cfg.rebalancer)

# the global batch when batch_size is 0: the tiny CPU model keeps 32 (the demo's runs and their folder keys);
# the GPU sizes take DDPM's 128 (Ho et al. 2020, CIFAR-10), a batch that keeps an H100 busy
DEFAULT_BATCH = {"tiny": 32, "small": 128, "paper": 128}


def check_pixel_size(size: tuple[int, int]) -> None:
    """A one-line error when images of `size` are larger than the pixel UNet is sized for."""
    if max(size) > MAX_PIXEL_SIDE:
        raise DiffbalanceError(f"cfg trains a pixel-space UNet sized for images up to {MAX_PIXEL_SIDE}×"
                               f"{MAX_PIXEL_SIDE}; these are {size[0]}×{size[1]}",
                               "train it in a VAE's latent space (train.vae), use ldm or ldm-img2img (a pretrained "
                               f"latent diffusion model), or set image_size ≤ {MAX_PIXEL_SIDE}")


@dataclass(frozen=True)
class CFGTrainConfig(Config):
    model_size: Literal["tiny", "small", "paper"] = "tiny"  # tiny (CPU demo/tests) | small (~10M) | paper (35.7M DDPM)
    vae: str | None = None  # a pretrained AutoencoderKL (a diffusers folder, a model's folder with vae/, or a Hub id):
    # the UNet learns its latents (the class-conditional LDM, generate.cfg.latent); None = pixel space (≤ 64 px)
    block_out_channels: tuple[int, ...] = ()  # override the size's channels per level (tests); () = the size's, one
    # level more per doubling of the (latent) side past 32 (generate.cfg.unet.levels_for)
    layers_per_block: int = 0  # override the size's res blocks per level; 0 = the size's
    train_steps: int = 1000  # optimiser steps in total
    batch_size: int = 0  # images per optimiser step over all processes (DDP); 0 = the size's (DEFAULT_BATCH)
    lr: float = 2e-3  # peak AdamW learning rate (after the warmup); the tiny model tolerates a large one
    warmup_steps: int = 50  # linear learning-rate warmup from 0 to lr
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    grad_clip_norm: float = 1.0  # clip the global gradient norm to this; 0 disables
    ema_decay: float = 0.995  # EMA decay of the weights (warmed up as min(decay, (1+step)/(10+step)))
    p_uncond: float = 0.1  # probability that a training label is replaced by the null class (label dropout)
    num_train_timesteps: int = 1000  # T of the forward process
    # linear: DDPM's β (Ho et al. 2020, paper-faithful) | squaredcos_cap_v2: cosine (Nichol & Dhariwal 2021)
    beta_schedule: BetaSchedule = "linear"
    beta_start: float = 1e-4  # β_1 of the linear schedule
    beta_end: float = 0.02  # β_T of the linear schedule
    dropout: float = -1.0  # UNet dropout; < 0 = the size's default (0.1 for paper, 0 otherwise)
    horizontal_flip: bool = True  # flip half of the training images left-right
    checkpoint_every_steps: int = 250  # write a resumable checkpoint every N steps; 0 = only at the end
    keep_checkpoints: int = 2  # older checkpoint-<step> folders are deleted beyond this many
    seed: int = 0  # seeds initial weights, batch order, label dropout, timesteps and noise
    bf16: bool = True  # bf16 autocast (CUDA only; the CPU path stays fp32)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size == 0:  # resolved here, so to_dict() and train_config.json carry the number used
            object.__setattr__(self, "batch_size", DEFAULT_BATCH[self.model_size])

    def validate(self) -> None:
        self.require(all(c >= 1 for c in self.block_out_channels), "block_out_channels", "positive channel counts")
        self.require(self.layers_per_block >= 0, "layers_per_block", "≥ 0 (0 = the size's)")
        self.require(self.train_steps >= 1, "train_steps", "at least 1")
        self.require(self.batch_size >= 0, "batch_size", "at least 1 (or 0 for the model size's default)")
        self.require(self.lr > 0, "lr", "positive")
        self.require(self.weight_decay >= 0, "weight_decay", "≥ 0")
        self.require(0 <= self.p_uncond < 1, "p_uncond", "in [0, 1)")
        self.require(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        self.require(self.num_train_timesteps >= 2, "num_train_timesteps", "at least 2")
        self.require(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "≥ 0")
        self.require(self.keep_checkpoints >= 1, "keep_checkpoints", "at least 1")

    def noise_schedule(self) -> dict[str, Any]:
        """The forward process, as the keyword arguments every diffusers scheduler takes (the training scheduler,
        saved as the generator's scheduler/, is DDPMScheduler(**noise_schedule()))."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": "epsilon",
        }
