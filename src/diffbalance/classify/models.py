"""Classifiers registered by name; each one splits into `forward_features` and a linear `head` (timm's split).

    logits = head(forward_features(x)),  forward_features(x): (N, C, H, W) float → (N, D)

so the same network classifies and extracts features (for feature-space metrics). Every model's `head` is one
nn.Linear: classifier re-training (cRT, classify.head_retrain) re-initialises and re-trains that layer alone.

- `resnet18`, `resnet50`: torchvision's ResNet definitions with the CIFAR stem of He et al. (2016, §4.2) as used
  by every CIFAR-LT paper: conv1 is 3×3, stride 1, padding 1 and the stem max-pool is removed, so a 32×32 image
  reaches layer4 at 4×4 instead of 1×1.
- `small_cnn`: three conv-BN-ReLU stages (32/64/128 channels, 2×2 max-pool after the first two) + global average
  pool + linear; trains Fashion-MNIST 28×28 at > 1000 img/s on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet

from diffbalance.infra.errors import DiffbalanceError


class CifarResNet(nn.Module):
    """A torchvision ResNet with the CIFAR stem; `body` is the ResNet up to the pooled features, `head` its fc."""

    def __init__(self, depth_fn: Callable[..., resnet.ResNet], num_classes: int, in_channels: int):
        super().__init__()
        body = depth_fn(weights=None, num_classes=num_classes)
        body.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's conv init
        body.maxpool = nn.Identity()
        self.head = body.fc
        body.fc = nn.Identity()  # body(x) now stops at the flattened global average pool
        self.body = body
        self.feature_dim = self.head.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, 512) for resnet18, (N, 2048) for resnet50

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """conv(32)-pool-conv(64)-pool-conv(128)-GAP-linear; a 28×28 input is seen at 28, 14 and 7 pixels."""

    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, w1),
            nn.MaxPool2d(2),  # (N, w1, H/2, W/2)
            _conv_bn_relu(w1, w2),
            nn.MaxPool2d(2),  # (N, w2, H/4, W/4)
            _conv_bn_relu(w2, w3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (N, w3)
        )
        self.head = nn.Linear(w3, num_classes)
        self.feature_dim = w3
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "small_cnn": lambda k, c: SmallCNN(k, c),
    "resnet18": lambda k, c: CifarResNet(resnet.resnet18, k, c),
    "resnet50": lambda k, c: CifarResNet(resnet.resnet50, k, c),
}
CLASSIFIERS: tuple[str, ...] = tuple(_BUILDERS)


def build_classifier(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """A freshly initialised classifier (weights from the global RNG: seed it, e.g. under `fork_rng`)."""
    if name not in _BUILDERS:
        raise DiffbalanceError(f"unknown classifier {name!r}", f"use one of {', '.join(CLASSIFIERS)}")
    if num_classes < 2:
        raise DiffbalanceError(f"a classifier needs at least 2 classes, got {num_classes}", "pass a labelled set")
    if in_channels not in (1, 3):
        raise DiffbalanceError(f"images must have 1 or 3 channels, got {in_channels}", "convert the images")
    return _BUILDERS[name](num_classes, in_channels)
