"""ImageNet backbones users fine-tune, by name in the classifier registry (classify.models.CLASSIFIERS):

    timm/<model>    any timm model, e.g. timm/resnet50, timm/convnext_tiny.fb_in1k (timm.list_models())
    tv/<model>      a torchvision ImageNet model, e.g. tv/resnet18, tv/efficientnet_b0
    inception-v3-fid  the FID Inception-V3 up to pool3 (the ImageNet network this project has offline)

Each keeps its ImageNet stem and is wrapped in the project's split (timm's own):

    forward_features(x) = body(resize(x, input_size))   (N, C, H, W) → (N, D), the pooled pre-logits features
    logits = head(forward_features(x))                   head: one nn.Linear(D, classes), new for the user's classes

so cRT, feature fills and domain features work on it as on the CIFAR-stem models. `input_size` is the side the
images are resized to (bilinear, antialiased) inside the model: the backbone's pretrained input size (timm's
`pretrained_cfg`, 224 for most), or the recipe's `input_size`. The images are normalised with the backbone's own
mean and std (`normalization`), not the training set's. Weights: `pretrained: false` (random init), `true` (the
timm / torchvision download, or their cache offline) or a path to a local safetensors file of the same model.
A grey image goes in with timm's `in_chans=1` (the first conv's weights summed over RGB) or, for torchvision, its
one channel repeated.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffbalance.classify.feature_memo import MEMO
from diffbalance.generate.loading import error_text
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.registry import Entry, Registry

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PretrainedClassifier(nn.Module):
    """A pooled-feature backbone `body` (N, C, s, s) → (N, D) with a new linear head for `num_classes`."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, input_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], repeat_grey: bool = False, identity: str = ""):
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.input_size = input_size  # the side images are resized to before the stem
        self.normalization = (tuple(mean), tuple(std))  # the backbone's, used instead of the training set's
        self.repeat_grey = repeat_grey  # torchvision stems take 3 channels: a grey image is repeated
        self.frozen = False  # linear probe: the body learns nothing and keeps its batch-norm statistics
        self.identity = identity  # name, weights, input size, channels: a frozen body's features are kept under it

    def freeze_backbone(self) -> None:
        """Linear probe: only the head learns; the body stays in eval mode whatever `train()` says."""
        self.body.requires_grad_(False)
        self.frozen = True

    def train(self, mode: bool = True) -> PretrainedClassifier:
        super().train(mode)
        if self.frozen:
            self.body.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen and self.identity:  # a linear probe: each input's features once (classify.feature_memo)
            return MEMO.features(self.identity, x, self._body_features)
        return self._body_features(x)

    def _body_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                              align_corners=False)
        if self.repeat_grey and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.body(x)  # (N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def timm_classifier(model: str, num_classes: int, in_channels: int, pretrained: bool | str = False,
                    input_size: int | None = None) -> PretrainedClassifier:
    import timm

    weights = _weights_file(pretrained, f"timm/{model}")
    try:
        body = timm.create_model(model, pretrained=pretrained is True, num_classes=0, in_chans=in_channels)
    except OSError as err:  # offline and not in the cache (huggingface_hub's errors are OSErrors)
        raise DiffbalanceError(f"the pretrained weights of timm/{model} are not in the Hugging Face cache "
                               f"({_hub_cache()}) and could not be downloaded ({type(err).__name__})",
                               f"download them once online (python -c \"import timm; timm.create_model('{model}', "
                               "pretrained=True)\"), or pass pretrained: PATH (a local safetensors file)") from None
    if weights:
        _load_timm_file(body, weights, model, in_channels)
    cfg = body.pretrained_cfg
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if in_channels == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    _check_size(f"timm/{model}", size, _reduction(body))
    return PretrainedClassifier(body, body.num_features, num_classes, size, mean, std,
                                identity=_identity(f"timm/{model}", pretrained, size, in_channels))


def torchvision_classifier(model: str, num_classes: int, in_channels: int, pretrained: bool | str = False,
                           input_size: int | None = None) -> PretrainedClassifier:
    from torchvision import models

    weights = _weights_file(pretrained, f"tv/{model}")
    try:
        body = models.get_model(model, weights="DEFAULT" if pretrained is True else None)
    except OSError as err:
        raise DiffbalanceError(f"the pretrained weights of tv/{model} are not in torchvision's cache "
                               f"({torch.hub.get_dir()}) and could not be downloaded ({type(err).__name__})",
                               "download them once online, or pass pretrained: PATH (a local safetensors "
                               "file)") from None
    if weights:
        from safetensors.torch import load_file

        _load_strict(body, load_file(str(weights)), weights, f"tv/{model}")
    feature_dim = _drop_classifier(body, f"tv/{model}")
    size = input_size or 224
    _check_size(f"tv/{model}", size, 32)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else ((0.449,), (0.226,))
    return PretrainedClassifier(body, feature_dim, num_classes, size, mean, std, repeat_grey=in_channels == 1,
                                identity=_identity(f"tv/{model}", pretrained, size, in_channels))


def inception_classifier(num_classes: int, in_channels: int, pretrained: bool | str = False,
                         input_size: int | None = None) -> PretrainedClassifier:
    """The FID Inception-V3 (TF 2015-12-05, ImageNet) up to pool3, 2048 features: the one ImageNet network this
    project can reach offline. Its input is x/127.5 − 1, i.e. mean 0.5, std 0.5 of x/255."""
    from diffbalance.evaluate.fid.features import _Pool3Net, pool3_network

    size = input_size or 299
    _check_size("inception-v3-fid", size, 75)
    if pretrained is False:
        body = _Pool3Net()
    else:
        body = pool3_network(None if pretrained is True else pretrained)
    return PretrainedClassifier(body, 2048, num_classes, size, (0.5,) * 3 if in_channels == 3 else (0.5,),
                                (0.5,) * 3 if in_channels == 3 else (0.5,), repeat_grey=in_channels == 1,
                                identity=_identity("inception-v3-fid", pretrained, size, in_channels))


def resolve_timm(name: str) -> Entry | None:
    """The registry entry of "timm/<model>" when timm knows the model (None otherwise: an unknown name)."""
    import timm

    model = name.removeprefix("timm/")
    if not timm.is_model(model):
        return None
    return Entry(name, f"timm's {model} (ImageNet stem)",
                 lambda k, c, **opts: timm_classifier(model, k, c, **opts),
                 {"min_size": 1, "pretrainable": True})


def resolve_torchvision(name: str) -> Entry | None:
    from torchvision import models

    model = name.removeprefix("tv/")
    if model not in models.list_models(module=models):
        return None
    return Entry(name, f"torchvision's {model} (ImageNet stem)",
                 lambda k, c, **opts: torchvision_classifier(model, k, c, **opts),
                 {"min_size": 1, "pretrainable": True})


def register_families(registry: Registry) -> None:
    registry.resolver("timm/", resolve_timm)
    registry.resolver("tv/", resolve_torchvision)
    registry.add("inception-v3-fid", inception_classifier, pretrainable=True, min_size=1,
                 help="the FID Inception-V3 (ImageNet) up to pool3, 2048 features; pretrained: true finds the FID "
                      "weights as `diffbalance fid` does (299 px by default; ≥ 75 with input_size)")


def _identity(name: str, pretrained: bool | str, size: int, channels: int) -> str:
    """What makes a backbone's features what they are; "" (never kept) for random weights, which differ by seed."""
    if pretrained is False:
        return ""
    weights = "default" if pretrained is True else _file_identity(Path(pretrained))
    return f"{name}|{weights}|{size}|{channels}"


def _file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}@{stat.st_size}:{stat.st_mtime_ns}"


def _weights_file(pretrained: bool | str, name: str) -> Path | None:
    if isinstance(pretrained, bool):
        return None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise DiffbalanceError(f"no weights file at {pretrained} (pretrained of {name})",
                               "pass an existing .safetensors file, or pretrained: true / false")
    if path.suffix != ".safetensors":
        raise DiffbalanceError(f"{pretrained} is not a safetensors file (pretrained of {name}); pickled "
                               "checkpoints are never loaded", "save the weights with safetensors.torch.save_file")
    return path


def _load_timm_file(body: nn.Module, path: Path, model: str, in_channels: int) -> None:
    """A timm model's own weights from a safetensors file, strictly: its classifier dropped (a new head is made
    for the user's classes), its first conv summed to one channel for grey images (timm's adapt_input_conv)."""
    from safetensors.torch import load_file
    from timm.models import adapt_input_conv

    cfg = body.pretrained_cfg
    state = load_file(str(path))
    classifiers = cfg.get("classifier") or ()
    for prefix in [classifiers] if isinstance(classifiers, str) else classifiers:
        state = {k: v for k, v in state.items() if not k.startswith(prefix + ".")}
    first = f"{cfg.get('first_conv')}.weight"
    if in_channels != 3 and first in state:
        state[first] = adapt_input_conv(in_channels, state[first])
    _load_strict(body, state, path, f"timm/{model}")


def _load_strict(model: nn.Module, state: dict, path: Path, name: str) -> None:
    """`state` (read from `path`) into `model`, every key matching: another architecture is one line."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise DiffbalanceError(f"weights in {path} are not those of {name} ({error_text(err)})",
                               f"pass a safetensors file saved from {name}, or pretrained: true") from None


def _drop_classifier(model: nn.Module, name: str) -> int:
    """Replace a torchvision model's last Linear (fc, classifier[-1], heads.head) by Identity; its input width."""
    for owner, attr in ((model, "fc"), (getattr(model, "heads", None), "head"),
                        (getattr(model, "classifier", None), None)):
        if owner is None:
            continue
        if attr is None and isinstance(owner, nn.Sequential) and isinstance(owner[-1], nn.Linear):
            width = owner[-1].in_features
            owner[-1] = nn.Identity()
            return width
        layer = getattr(owner, attr, None) if attr else None
        if isinstance(layer, nn.Linear):
            setattr(owner, attr, nn.Identity())
            return layer.in_features
    raise DiffbalanceError(f"{name} has no linear classifier to replace", "use a timm/<model> name instead")


def _reduction(body: nn.Module) -> int:
    info = getattr(body, "feature_info", None)
    try:
        return int(info[-1]["reduction"]) if info else 32
    except (TypeError, KeyError, IndexError):
        return 32


def _check_size(name: str, size: int, reduction: int) -> None:
    if size < reduction:
        raise DiffbalanceError(f"input_size {size} is too small for {name}, which downsamples {reduction}×",
                               f"use input_size ≥ {reduction} (its pretrained size is best)")


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "~/.cache/huggingface/hub"
    return str(constants.HF_HUB_CACHE)
