"""The classifier-training recipe as one frozen, validated object, saved beside every checkpoint and result.

The paper gives no recipe (PAPER.md, "Training recipe not given"); the defaults are the usual CIFAR one:
SGD with Nesterov momentum 0.9, weight decay 5e-4, per-step cosine decay after a linear warmup,
random crop (pad 4) + horizontal flip.

Synthetic-aware options (no-ops at their defaults, so a run without them is today's run bit for bit):
- synthetic_weight: the loss weight of a generated image, real images weigh 1 (DiffuLT's weighted cross-entropy,
  Shao et al. 2024); the batch loss is Σ w_i ℓ_i / Σ w_i, so its scale (hence the effective lr) does not move with
  the share of generated images in a batch.
- prior: which images balanced_softmax's class prior counts: all training images, or only the real ones (Fill-Up,
  Shin et al. 2023; SYNAuG, Ye-Bin et al. 2023: a filled set looks balanced, the real world it models does not).
- head_retrain_epochs / head_retrain_lr: classifier re-training (cRT, Kang et al. 2020, "Decoupling representation
  and classifier for long-tailed recognition"; LDMLR's last-layer retraining): after the main training, freeze the
  features, re-initialise the linear head and train it on class-balanced *real* images (classify.head_retrain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from diffbalance.classify.models import CLASSIFIERS
from diffbalance.configs import Config


ModelName = Literal[CLASSIFIERS]  # type: ignore[valid-type]  (the registered classifier names)


@dataclass(frozen=True)
class TrainConfig(Config):
    model: ModelName = "small_cnn"  # a name from classify.models.CLASSIFIERS
    epochs: int = 30  # passes over the training set
    batch_size: int = 128  # images per optimiser step (the last partial batch of an epoch is dropped)
    lr: float = 0.1  # peak learning rate, reached at the end of the warmup
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (needs momentum > 0)
    weight_decay: float = 5e-4  # L2 penalty on every parameter (SGD's coupled weight decay)
    schedule: Literal["cosine", "onecycle"] = "cosine"  # cosine: linear warmup then per-step cosine to 0 | OneCycleLR
    warmup_epochs: float = 1.0  # epochs of linear warmup, at most the whole run (onecycle: the rising part; 0 → 30 %)
    label_smoothing: float = 0.0  # ε of label smoothing, in [0, 1)
    loss: Literal["ce", "balanced_softmax"] = "ce"  # balanced_softmax: logits + log prior of the counts (Ren et al.)
    batch_mix: Literal["none", "mixup", "cutmix", "mixup_or_cutmix"] = "none"  # training-time batch mixing (50/50)
    batch_mix_alpha: float = 1.0  # Beta(α, α) parameter of the mixing weight λ
    random_crop_padding: int = 4  # pixels of zero padding before the random crop back to size; 0 disables
    horizontal_flip: bool = True  # flip half of the images left-right
    bf16: bool = True  # bf16 autocast (CUDA only; the CPU path stays fp32)
    channels_last: bool = True  # channels_last memory format (CUDA only)
    compile: bool = False  # torch.compile the model (CUDA only)
    eval_batch_size: int = 1024  # images per forward pass when predicting or extracting features
    checkpoint_every_epochs: int = 1  # a resumable checkpoint every N epochs of either stage (given a folder); 0: never
    synthetic_weight: float = 1.0  # loss weight of a generated image (real: 1); 0 ignores them in the loss
    prior: Literal["train", "real"] = "train"  # balanced_softmax's class counts: all training images | real ones only
    head_retrain_epochs: int = 0  # cRT: epochs of re-training a fresh head on class-balanced real images; 0: off
    head_retrain_lr: float = 0.1  # start lr of that stage (per-step cosine to 0, no warmup)

    def validate(self) -> None:
        self.require(self.epochs >= 1, "epochs", "at least 1")
        self.require(self.batch_size >= 2, "batch_size", "at least 2 (batch norm needs two images)")
        self.require(self.lr > 0, "lr", "positive")
        self.require(0 <= self.momentum < 1, "momentum", "in [0, 1)")
        self.require(not self.nesterov or self.momentum > 0, "nesterov", "False when momentum is 0")
        self.require(self.weight_decay >= 0, "weight_decay", "0 or more")
        self.require(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", "in [0, epochs]")
        self.require(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        self.require(self.batch_mix_alpha > 0, "batch_mix_alpha", "positive")
        self.require(self.random_crop_padding >= 0, "random_crop_padding", "0 or more")
        self.require(self.eval_batch_size >= 1, "eval_batch_size", "at least 1")
        self.require(self.checkpoint_every_epochs >= 0, "checkpoint_every_epochs", "0 or more")
        self.require(0 <= self.synthetic_weight < math.inf, "synthetic_weight", "a finite number, 0 or more")
        # plain CE has no prior: a "real" prior there would be silently ignored, so it is refused
        self.require(self.prior == "train" or self.loss == "balanced_softmax", "prior",
                     "'train' unless loss is balanced_softmax (only that loss uses a class prior)")
        self.require(self.head_retrain_epochs >= 0, "head_retrain_epochs", "0 or more")
        self.require(0 < self.head_retrain_lr < math.inf, "head_retrain_lr", "positive")
