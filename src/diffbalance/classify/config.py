"""The classifier-training recipe as one frozen, validated object, saved beside every checkpoint and result.

The paper gives no recipe (PAPER.md, "Training recipe not given"); the defaults are the usual CIFAR one:
SGD with Nesterov momentum 0.9, weight decay 5e-4, per-step cosine decay after a linear warmup,
random crop (pad 4) + horizontal flip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffbalance.classify.models import CLASSIFIERS
from diffbalance.configs import check_choice, check_value, checked_fields
from diffbalance.errors import DiffbalanceError

SCHEDULES = ("cosine", "onecycle")
LOSSES = ("ce", "balanced_softmax")
BATCH_MIXES = ("none", "mixup", "cutmix", "mixup_or_cutmix")


@dataclass(frozen=True)
class TrainConfig:
    model: str = "small_cnn"  # a name from classify.models.CLASSIFIERS
    epochs: int = 30  # passes over the training set
    batch_size: int = 128  # images per optimiser step (the last partial batch of an epoch is dropped)
    lr: float = 0.1  # peak learning rate, reached at the end of the warmup
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (needs momentum > 0)
    weight_decay: float = 5e-4  # L2 penalty on every parameter (SGD's coupled weight decay)
    schedule: str = "cosine"  # "cosine": linear warmup then per-step cosine to 0; "onecycle": torch OneCycleLR
    warmup_epochs: float = 1.0  # epochs of linear warmup (for onecycle: the rising part; 0 → PyTorch's 30 %)
    label_smoothing: float = 0.0  # ε of label smoothing, in [0, 1)
    loss: str = "ce"  # "ce" or "balanced_softmax" (logits + log prior of the training counts; Ren et al. 2020)
    batch_mix: str = "none"  # training-time batch mixing: "none", "mixup", "cutmix" or "mixup_or_cutmix" (50/50)
    batch_mix_alpha: float = 1.0  # Beta(α, α) parameter of the mixing weight λ
    random_crop_padding: int = 4  # pixels of zero padding before the random crop back to size; 0 disables
    horizontal_flip: bool = True  # flip half of the images left-right
    bf16: bool = True  # bf16 autocast (CUDA only; the CPU path stays fp32)
    channels_last: bool = True  # channels_last memory format (CUDA only)
    compile: bool = False  # torch.compile the model (CUDA only)
    eval_batch_size: int = 1024  # images per forward pass when predicting or extracting features
    checkpoint_every_epochs: int = 1  # write a resumable checkpoint every N epochs (when a folder is given); 0: never

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
            if f.type == "float":  # YAML/JSON may write 1.0 as 1: store floats as floats
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        _check_choice("model", self.model, CLASSIFIERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("batch_mix", self.batch_mix, BATCH_MIXES)
        _check(self.epochs >= 1, "epochs", self.epochs, "at least 1")
        _check(self.batch_size >= 2, "batch_size", self.batch_size, "at least 2 (batch norm needs two images)")
        _check(self.lr > 0, "lr", self.lr, "positive")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        _check(not self.nesterov or self.momentum > 0, "nesterov", self.nesterov, "False when momentum is 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "0 or more")
        _check(0 <= self.warmup_epochs < self.epochs, "warmup_epochs", self.warmup_epochs, "in [0, epochs)")
        _check(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)")
        _check(self.batch_mix_alpha > 0, "batch_mix_alpha", self.batch_mix_alpha, "positive")
        _check(self.random_crop_padding >= 0, "random_crop_padding", self.random_crop_padding, "0 or more")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "at least 1")
        _check(self.checkpoint_every_epochs >= 0, "checkpoint_every_epochs", self.checkpoint_every_epochs, "0 or more")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict (a YAML preset, a saved config.json); unknown keys are an error, missing keys default."""
        return cls(**checked_fields(cls, d, "classifier option"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_type(name: str, value: Any, type_name: str) -> None:
    ok = {
        "str": isinstance(value, str),
        "int": _is_int(value),
        "float": isinstance(value, float) or _is_int(value),
        "bool": isinstance(value, bool),
    }[type_name]
    if not ok:
        raise DiffbalanceError(
            f"classifier option {name}={value!r} is not a {type_name}", f"give {name} as a {type_name}"
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    check_choice("classifier option", name, value, choices)


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    check_value(ok, "classifier option", name, value, expected)
