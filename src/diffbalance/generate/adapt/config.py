"""Options of an adaptation (`diffbalance adapt`, or `ldm`'s `adapt:` parameter): one frozen section, saved as
adapt_config.json beside the adapter and hashed into the name of an on-the-fly adapter's folder
(`adapter-<key>`), so field names, defaults and order are part of that contract. The base model is not here: it
is the rebalancer's `model` (or the command's `--model`), recorded beside this config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffbalance.infra.configs import Config

Method = Literal["lora", "textual-inversion"]
Identifier = Literal["name", "rare-token"]
# constant AdamW rates of diffusers' own example scripts (train_text_to_image_lora.py, textual_inversion.py at
# batch 4 without lr scaling; DA-Fusion's 5e-4 for its per-class tokens)
DEFAULT_LR = {"lora": 1e-4, "textual-inversion": 5e-4}


@dataclass(frozen=True)
class AdaptConfig(Config):
    method: Method = "lora"  # lora: low-rank updates of the UNet's attention | textual-inversion: a new token per class
    rank: int = 4  # LoRA rank r of every adapted projection (lora only)
    alpha: float = 4.0  # LoRA scale numerator: a projection becomes W + (alpha / rank)·B·A (lora only)
    train_text_encoder: bool = False  # lora: also adapt the text encoder's attention projections
    identifier: Identifier = "name"  # lora: {class} is the class name | rare-token: "sks<k> <name>" (DreamBooth)
    prompt_template: str = "a photo of a {class}"  # training prompt; {class} → the class's word (name or token)
    train_steps: int = 1000  # optimiser steps in total (every class at once)
    batch_size: int = 4  # images per optimiser step
    lr: float = 0.0  # constant AdamW learning rate; 0 = the method's default (DEFAULT_LR)
    weight_decay: float = 0.01  # AdamW decoupled weight decay of the trained tensors
    grad_clip_norm: float = 1.0  # clip the trained tensors' gradient norm to this; 0 disables
    resolution_px: int = 0  # training side: images upscaled to cover it, centre-cropped; 0 = the pipeline's own
    class_balanced: bool = True  # draw a class uniformly, then one of its images (rare classes get 1/K of the steps)
    horizontal_flip: bool = True  # flip half of the training images left-right
    bf16: bool = True  # bf16 autocast on CUDA (weights and optimiser stay fp32; the CPU path is fp32 throughout)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps
    checkpoint_every_steps: int = 100  # write a resumable checkpoint every N steps; 0 = only at the end
    keep_checkpoints: int = 2  # older checkpoint-<step> folders are deleted beyond this many
    seed: int = 0  # seeds LoRA's initial weights, the batches, flips, latent samples, timesteps and noise

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr == 0:  # resolved here, so to_dict() and adapt_config.json carry the rate used
            object.__setattr__(self, "lr", DEFAULT_LR[self.method])

    def validate(self) -> None:
        self.require(self.rank >= 1, "rank", "at least 1, e.g. 4")
        self.require(self.alpha > 0, "alpha", "positive, e.g. the rank")
        lora = self.method == "lora"
        self.require(lora or not self.train_text_encoder, "train_text_encoder", "false with textual-inversion "
                     "(it trains token embeddings only)")
        self.require(lora or self.identifier == "name", "identifier", "name with textual-inversion (the learned "
                     "token is the identifier)")
        self.require("{class}" in self.prompt_template, "prompt_template", "a text with {class}, e.g. "
                     "'a photo of a {class}'")
        self.require(self.train_steps >= 1, "train_steps", "at least 1")
        self.require(self.batch_size >= 1, "batch_size", "at least 1")
        self.require(self.lr >= 0, "lr", "positive (or 0 for the method's default)")
        self.require(self.weight_decay >= 0, "weight_decay", "≥ 0")
        self.require(self.grad_clip_norm >= 0, "grad_clip_norm", "≥ 0 (0 disables clipping)")
        self.require(self.resolution_px == 0 or (self.resolution_px >= 8 and self.resolution_px % 8 == 0),
                     "resolution_px", "a multiple of 8, e.g. 512 (or 0 for the pipeline's own size)")
        self.require(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "≥ 0 (0: only at the end)")
        self.require(self.keep_checkpoints >= 1, "keep_checkpoints", "at least 1")
