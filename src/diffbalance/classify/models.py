"""Classifiers registered by name (`CLASSIFIERS`, infra.registry); each one splits into `forward_features` and a
linear `head` (timm's split).

    logits = head(forward_features(x)),  forward_features(x): (N, C, H, W) float → (N, D)

so the same network classifies and extracts features (for feature-space metrics). Every model's `head` is one
nn.Linear: classifier re-training (cRT, classify.head_retrain) re-initialises and re-trains that layer alone.

- `resnet18`, `resnet50`: torchvision's ResNet definitions with the CIFAR stem of He et al. (2016, §4.2) as used
  by every CIFAR-LT paper: conv1 is 3×3, stride 1, padding 1 and the stem max-pool is removed, so a 32×32 image
  reaches layer4 at 4×4 instead of 1×1.
- `small_cnn`: three conv-BN-ReLU stages (32/64/128 channels, 2×2 max-pool after the first two) + global average
  pool + linear; trains Fashion-MNIST 28×28 at > 1000 img/s on two CPU cores.
- `timm/<model>`, `tv/<model>`: ImageNet backbones with their own stem, input size and normalisation, fine-tuned
  from pretrained weights (classify.backbones).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet

from diffbalance.classify.backbones import register_families
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.registry import Registry

Builder = Callable[..., nn.Module]  # (num_classes, in_channels[, pretrained=, input_size=]) → a fresh model
# metadata: `min_size`, the smallest input side in pixels the network accepts; `pretrainable`, it takes
# pretrained= and input_size= (the ImageNet backbones of classify.backbones)
CLASSIFIERS: Registry[Builder] = Registry("classifier", plugins="diffbalance.classifiers",
                                          hint="or any timm/<model> (timm.list_models()) or tv/<model> "
                                               "(torchvision's ImageNet models)")


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


@CLASSIFIERS.register("small_cnn", help="3 conv stages (32/64/128) + linear, from scratch; fast on the CPU",
                      min_size=4)
def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    return SmallCNN(num_classes, in_channels)


@CLASSIFIERS.register("resnet18", help="ResNet-18 with the CIFAR stem (3×3 conv, no max-pool), from scratch",
                      min_size=8)
def cifar_resnet18(num_classes: int, in_channels: int) -> nn.Module:
    return CifarResNet(resnet.resnet18, num_classes, in_channels)


@CLASSIFIERS.register("resnet50", help="ResNet-50 with the CIFAR stem (3×3 conv, no max-pool), from scratch",
                      min_size=8)
def cifar_resnet50(num_classes: int, in_channels: int) -> nn.Module:
    return CifarResNet(resnet.resnet50, num_classes, in_channels)


def available_classifiers() -> list[str]:
    return CLASSIFIERS.available()


def build_classifier(name: str, num_classes: int, in_channels: int, pretrained: bool | str = False,
                     input_size: int | None = None) -> nn.Module:
    """A classifier with a fresh head (weights from the global RNG: seed it, e.g. under `fork_rng`); an ImageNet
    backbone (classify.backbones) starts from `pretrained` weights and sees its images at `input_size`."""
    entry = CLASSIFIERS.entry(name)
    if num_classes < 2:
        raise DiffbalanceError(f"a classifier needs at least 2 classes, got {num_classes}", "pass a labelled set")
    if in_channels not in (1, 3):
        raise DiffbalanceError(f"images must have 1 or 3 channels, got {in_channels}", "convert the images")
    if entry.get("pretrainable"):
        return entry.obj(num_classes, in_channels, pretrained=pretrained, input_size=input_size)
    if pretrained is not False or input_size is not None:
        raise DiffbalanceError(f"{name} trains from scratch at the images' own size (no pretrained weights, no "
                               "input_size)", "use a timm/<model> or tv/<model> backbone, or drop pretrained / "
                               "input_size")
    return entry.obj(num_classes, in_channels)


def check_input_size(name: str, image_size: tuple[int, int]) -> None:
    """A one-line error when images of `image_size` are smaller than classifier `name` takes (its `min_size`)."""
    smallest = CLASSIFIERS.entry(name).get("min_size", 1)
    if min(image_size) < smallest:
        raise DiffbalanceError(f"{name} needs images of at least {smallest}×{smallest}; these are "
                               f"{image_size[0]}×{image_size[1]}", "use larger images (image_size), or small_cnn")


register_families(CLASSIFIERS)  # timm/<model>, tv/<model>: resolved on demand
