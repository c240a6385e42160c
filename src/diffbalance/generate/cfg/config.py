"""Training configuration of the class-conditional diffusion model (one frozen dataclass, saved beside every
checkpoint). The noise schedule defaults to the paper's DDPM (linear β 1e-4…0.02, T = 1000); the other defaults
suit the CPU demo (tiny model, Fashion-MNIST, a few minutes on 2 cores), which also switches to the cosine schedule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffbalance.configs import check_choice, check_value, checked_fields
from diffbalance.errors import DiffbalanceError

MODEL_SIZES = ("tiny", "small", "paper")
BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")  # DDPM's linear β (Ho et al. 2020) | cosine (Nichol & Dhariwal 2021)


@dataclass(frozen=True)
class CFGTrainConfig:
    model_size: str = "tiny"  # "tiny" (CPU demo/tests) | "small" (~10M params) | "paper" (DDPM CIFAR-10 UNet, 35.7M)
    block_out_channels: tuple[int, ...] = ()  # override the size's channels per level (tests); () = the size's
    layers_per_block: int = 0  # override the size's res blocks per level; 0 = the size's
    train_steps: int = 1000  # optimiser steps in total
    batch_size: int = 32  # images per optimiser step
    lr: float = 2e-3  # peak AdamW learning rate (after the warmup); the tiny model tolerates a large one
    warmup_steps: int = 50  # linear learning-rate warmup from 0 to lr
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    grad_clip_norm: float = 1.0  # clip the global gradient norm to this; 0 disables
    ema_decay: float = 0.995  # EMA decay of the weights (warmed up as min(decay, (1+step)/(10+step)))
    p_uncond: float = 0.1  # probability that a training label is replaced by the null class
    num_train_timesteps: int = 1000  # T of the forward process
    beta_schedule: str = "linear"  # "linear" (paper-faithful DDPM) | "squaredcos_cap_v2" (cosine)
    beta_start: float = 1e-4  # β_1 of the linear schedule
    beta_end: float = 0.02  # β_T of the linear schedule
    dropout: float = -1.0  # UNet dropout; < 0 = the size's default (0.1 for paper, 0 otherwise)
    horizontal_flip: bool = True  # flip half of the training images left-right
    checkpoint_every_steps: int = 250  # write a resumable checkpoint every N steps; 0 = only at the end
    keep_checkpoints: int = 2  # older checkpoint-<step> folders are deleted beyond this many
    seed: int = 0  # seeds initial weights, batch order, label dropout, timesteps and noise
    bf16: bool = True  # bf16 autocast (CUDA only; the CPU path stays fp32)

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        for name in ("lr", "weight_decay", "grad_clip_norm", "ema_decay", "p_uncond", "beta_start", "beta_end", "dropout"):
            object.__setattr__(self, name, float(getattr(self, name)))
        _choice("model_size", self.model_size, MODEL_SIZES)
        _choice("beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        _check(self.train_steps >= 1, "train_steps", self.train_steps, "at least 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "at least 1")
        _check(self.lr > 0, "lr", self.lr, "positive")
        _check(0 <= self.p_uncond < 1, "p_uncond", self.p_uncond, "in [0, 1)")
        _check(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "in [0, 1)")
        _check(self.num_train_timesteps >= 2, "num_train_timesteps", self.num_train_timesteps, "at least 2")
        _check(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", self.checkpoint_every_steps, "≥ 0")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", self.keep_checkpoints, "at least 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CFGTrainConfig:
        """From a plain dict (JSON/YAML section); unknown keys are a one-line error, not silently dropped."""
        d = checked_fields(cls, d, "generator training option")
        try:
            return cls(**d)
        except (TypeError, ValueError) as err:
            raise DiffbalanceError(f"bad generator training option: {err}", "check the values' types") from None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    def noise_schedule(self) -> dict[str, Any]:
        """The forward process, as the keyword arguments every diffusers scheduler takes (sampling rebuilds from it)."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": "epsilon",
        }


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    check_choice("generator training option", name, value, choices)


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    check_value(ok, "generator training option", name, value, expected)
