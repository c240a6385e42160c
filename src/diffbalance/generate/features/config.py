"""The feature fill of classifier head re-training as one frozen config section (`TrainConfig.feature_fill`).

LDMLR (Han et al., "Latent-based Diffusion Model for Long-tailed Recognition", CVPR-W 2024): encode the
long-tailed training set with the stage-1 classifier, train a diffusion model on those features, sample extra
features for the tail classes and re-train the linear head on real + synthetic features. One section holds what
the feature model learns from (`views`), how many features it makes (`factor`), how the head weighs them
(`synthetic_weight`) and the model itself. The defaults suit the CPU (a ~0.5M-parameter MLP, ~2000 steps).

How many per class, decided in one place (classify.feature_fill.synthetic_counts):
    m_c = ⌊factor · (n_max − n_c) + ½⌋,   n_c = real training images of class c, n_max = max_c n_c
so factor 1 fills every class up to the largest, factor 0 adds nothing (the head stage is then plain cRT, bit for
bit). The noise schedule is DDPM's forward process (Ho et al. 2020): linear β 1e-4…0.02 or the cosine schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from diffbalance.generate.schedulers import BetaSchedule, sampler_names
from diffbalance.infra.configs import Config

FeatureSampler = Literal[sampler_names("features")]  # type: ignore[valid-type]

BETA_START, BETA_END = 1e-4, 0.02  # DDPM's linear β_1, β_T (Ho et al. 2020)


@dataclass(frozen=True)
class FeatureFillConfig(Config):
    views: int = 4  # augmented views (the recipe's crop/flip) per real training image whose features train the model
    factor: float = 1.0  # synthetic features of class c: round(factor · (n_max − n_c)); 1 fills up to the largest
    synthetic_weight: float = 1.0  # loss weight of a synthetic feature in the head's loss (a real image weighs 1)
    hidden: int = 256  # width of the ε-network's residual MLP
    depth: int = 2  # residual blocks of that MLP
    train_steps: int = 2000  # optimiser steps of the feature model
    batch_size: int = 256  # features per optimiser step (drawn with replacement)
    lr: float = 1e-3  # AdamW peak learning rate, cosine-decayed to 0 over train_steps
    p_uncond: float = 0.1  # probability that a training label is replaced by the null class ∅ (label dropout)
    guidance_w: float = 1.0  # Ho & Salimans' w: ε̃ = (1 + w)·ε(x, c) − w·ε(x, ∅); 0: the conditional model alone
    sampler: FeatureSampler = "ddim"  # ddim (η = 0) | DPM-Solver++(2M) | ancestral DDPM (all T)
    num_inference_steps: int = 50  # denoising steps of ddim and dpmpp (ddpm always runs all T)
    num_train_timesteps: int = 1000  # T of the forward process
    # linear: DDPM's β 1e-4…0.02 | squaredcos_cap_v2: cosine (Nichol & Dhariwal 2021)
    beta_schedule: BetaSchedule = "linear"
    checkpoint_every_steps: int = 500  # feature-model checkpoint every N steps (given a folder); 0: none mid-training

    def validate(self) -> None:
        self.require(self.views >= 1, "views", "at least 1")
        self.require(0 <= self.factor < math.inf, "factor", "a finite number, 0 or more")
        self.require(0 <= self.synthetic_weight < math.inf, "synthetic_weight", "a finite number, 0 or more")
        self.require(self.hidden >= 2, "hidden", "at least 2")
        self.require(self.depth >= 1, "depth", "at least 1")
        self.require(self.train_steps >= 1, "train_steps", "at least 1")
        self.require(self.batch_size >= 1, "batch_size", "at least 1")
        self.require(0 < self.lr < math.inf, "lr", "positive")
        self.require(0 <= self.p_uncond < 1, "p_uncond", "in [0, 1)")
        self.require(0 <= self.guidance_w < math.inf, "guidance_w", "a finite number, 0 or more (Ho's w)")
        # guidance needs ε(x, ∅), which only label dropout trains
        self.require(self.guidance_w == 0 or self.p_uncond > 0, "guidance_w", "0 when p_uncond is 0 (ε(x, ∅) is "
                     "never trained)")
        self.require(self.num_train_timesteps >= 2, "num_train_timesteps", "at least 2")
        self.require(1 <= self.num_inference_steps <= self.num_train_timesteps, "num_inference_steps",
                     "in [1, num_train_timesteps]")
        self.require(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "0 or more")

    def noise_schedule(self) -> dict[str, Any]:
        """The forward process, as the keyword arguments every diffusers scheduler takes."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": BETA_START,
            "beta_end": BETA_END,
            "prediction_type": "epsilon",
        }
