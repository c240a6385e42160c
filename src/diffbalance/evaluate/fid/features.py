"""Feature extractors for FID/KID/precision-recall, behind one small interface.

Every extractor maps uint8 images (N, C, H, W) to float32 features (N, dim) on the CPU, in batches, on the device
it was built for, in fp32. It states what it is (`name`), which weights (`checksum`), and how images were
preprocessed (`resize`), so every score can say how it was measured (clean-fid's lesson).

- `InceptionPool3`: Inception-V3 of the TF graph 2015-12-05, pool3 (2048-d) — the network every FID uses.
  Images go to the device as uint8, are resized to 299×299 there, a batch at a time, and scaled x/127.5 − 1.
  On CUDA (`fast_gpu_path`) the convolutions run channels_last with cuDNN autotuning and TF32 (PyTorch's default
  for cuDNN convolutions, and what an Inception pass needs to reach thousands of images/s); the CPU path is plain
  fp32. The loaded network is kept per (weights file, device) for the life of the process: one load per run.
- `RandomConvFeatures`: a tiny fixed-seed random conv net, for fast tests only.
- `DomainFeatures`: features of a classifier trained on the balanced real set — "domain-FID (not Inception FID)".

Each kind's builder is registered beside its class (`@register_extractor`, evaluate.fid.extractors) under the name
`FidConfig.features` takes.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Literal, Protocol, get_args, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from diffbalance.evaluate.fid.extractors import register_extractor
from diffbalance.infra.device import DeviceLike, fast_gpu_path, resolve_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import shared_paths
from diffbalance.infra.seeding import forked_rng, generator

KNOWN_TORCHSCRIPT = "fid_inception_2015-12-05_pool3_torchscript.pt"
KNOWN_TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
WEIGHTS_ENV = "DIFFBALANCE_FID_WEIGHTS"
# torch-fidelity's converted TF weights (the same file torchmetrics downloads)
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
ResizeMode = Literal["bilinear-torch", "bilinear-tf1x"]  # 32→299: pytorch-fid's F.interpolate | TF1's resize
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
INCEPTION_SIZE = 299
MAX_LOADED_NETWORKS = 4  # (weights file, device) pairs kept loaded in one process
# Images per forward pass when no batch size is given ("auto"): DEFAULT_BATCH, except Inception on the CPU. There
# the work per image is the same at any batch, but memory and kernel time grow with it: Inception's largest
# activation is 5.5 MB per image (64×147×147 fp32), so at 256 images every large layer output is a fresh 1.4 GB
# allocation that glibc maps and unmaps (page faults: ~45 % of the CPU time in the kernel, 5.6 GB peak). At 8
# images it is 44 MB (results/cpu/peer-benchmarks.txt: at 8, 1.24 GB peak and 1.58x pytorch-fid's images/s; at 256
# the issue 21 table measured 5.65 GB and 0.63x).
DEFAULT_BATCH = 256
# the name of a Fréchet distance on a classifier's features (extractors without a `score` give "FID")
DOMAIN_SCORE = "domain-FID (not Inception FID)"
INCEPTION_CPU_BATCH = 8


@runtime_checkable
class FeatureExtractor(Protocol):
    name: str  # "inception-v3-2015-12-05-pool3", "random-conv", "domain-FID (not Inception FID): ..."
    checksum: str  # sha256 of the weights (file or parameters); part of every cache key
    dim: int  # feature length
    resize: str  # preprocessing mode, recorded with every score

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # uint8 (N, C, H, W) → float32 (N, dim), CPU
        ...


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extraction_batch(batch_size: int | None, device: DeviceLike, cpu_batch: int = DEFAULT_BATCH) -> int:
    """Images per forward pass: `batch_size`, or when it is None ("auto") `cpu_batch` on the CPU and DEFAULT_BATCH
    elsewhere. Features do not depend on it (each image's features are computed independently of the others)."""
    if batch_size is not None:
        return int(batch_size)
    kind = resolve_device(device).type if str(device) == "auto" else torch.device(device).type  # a name: no probe
    return cpu_batch if kind == "cpu" else DEFAULT_BATCH


def _batched(images: torch.Tensor, batch_size: int, fn) -> torch.Tensor:
    """fn over batches of `batch_size` images; the features stay where fn made them (no per-batch sync) and come
    back to the CPU once."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    out = [fn(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)]
    return torch.cat(out).cpu() if out else torch.zeros(0)


def conv_settings(device: torch.device) -> AbstractContextManager:
    """cuDNN autotuning and TF32 convolutions while features are extracted on CUDA (restored afterwards, so other
    stages keep their own settings); nothing on the CPU."""
    if not fast_gpu_path(device):
        return nullcontext()
    return torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=True)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grayscale repeated to 3 channels


def resize_299(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Float images (N, 3, H, W) in [0, 255] → (N, 3, 299, 299), on whatever device x is on."""
    if mode == "bilinear-torch":  # pytorch-fid's F.interpolate (half-pixel centres), no antialiasing
        size = (INCEPTION_SIZE, INCEPTION_SIZE)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    if mode == "bilinear-tf1x":  # torch-fidelity / torchmetrics: TF1 resize_bilinear (no half-pixel centres)
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        return interpolate_bilinear_2d_like_tensorflow1x(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), align_corners=False)
    raise DiffbalanceError(f"unknown resize mode {mode!r}", f"use one of {', '.join(RESIZE_MODES)}")


class _Pool3Net(nn.Module):
    """torch-fidelity's FID Inception-V3 up to pool3, built from its blocks so a `.pth` state dict (torch-fidelity,
    torchmetrics or pytorch-fid layout) loads with `torch.load(weights_only=True)` — torch-fidelity's own
    constructor unpickles with weights_only=False."""

    def __init__(self):
        super().__init__()
        from torch_fidelity import feature_extractor_inceptionv3 as tf

        self.Conv2d_1a_3x3 = tf.BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = tf.BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = tf.BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.MaxPool_1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = tf.BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = tf.BasicConv2d(80, 192, kernel_size=3)
        self.MaxPool_2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = tf.InceptionA(192, pool_features=32)
        self.Mixed_5c = tf.InceptionA(256, pool_features=64)
        self.Mixed_5d = tf.InceptionA(288, pool_features=64)
        self.Mixed_6a = tf.InceptionB(288)
        self.Mixed_6b = tf.InceptionC(768, channels_7x7=128)
        self.Mixed_6c = tf.InceptionC(768, channels_7x7=160)
        self.Mixed_6d = tf.InceptionC(768, channels_7x7=160)
        self.Mixed_6e = tf.InceptionC(768, channels_7x7=192)
        self.Mixed_7a = tf.InceptionD(768)
        self.Mixed_7b = tf.InceptionE_1(1280)
        self.Mixed_7c = tf.InceptionE_2(2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 299, 299) in [-1, 1] → (N, 2048)
        for module in self.children():
            x = module(x)
        return x.mean(dim=(2, 3))  # pool3


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _load_state_dict_net(path: Path) -> nn.Module:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — any unreadable file is the user's to fix
        raise DiffbalanceError(
            f"cannot read Inception weights {path} ({type(err).__name__})",
            "pass the FID TorchScript file or a pytorch-fid / torch-fidelity .pth state dict",
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    with forked_rng(0):  # default init (then overwritten by `state`) must not advance the caller's global RNG
        net = _Pool3Net()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the 1008-way head is not used by FID
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DiffbalanceError(
            f"{path} is not an FID Inception-V3 state dict ({len(missing)} missing, {len(unexpected)} unexpected keys)",
            "pass pytorch-fid's pt_inception-2015-12-05 .pth, torch-fidelity's weights-inception-2015-12-05 .pth, "
            f"or {KNOWN_TORCHSCRIPT}",
        )
    return net


def pool3_network(weights: str | Path | None = None) -> nn.Module:
    """The FID Inception-V3 up to pool3 built from blocks (`_Pool3Net`) that take any input of at least 75×75 in
    [-1, 1] — a frozen ImageNet backbone (classify.backbones: inception-v3-fid). Weights are found as `load_inception`
    finds them (the TorchScript mapped by evaluate.fid.mapping, or a .pth state dict); never downloaded here."""
    path, explicit = resolve_inception_weights(weights)
    if path is None:
        raise DiffbalanceError("no Inception-V3 FID weights found for the inception-v3-fid backbone",
                               f"set {WEIGHTS_ENV}=PATH to {KNOWN_TORCHSCRIPT} (or a .pth state dict), or pass "
                               "pretrained: PATH")
    checksum, torchscript = sha256_file(path), _is_torchscript(path)
    if not torchscript:
        return _load_state_dict_net(path)
    _check_torchscript(path, checksum, torchscript, explicit)
    from diffbalance.evaluate.fid.mapping import torchscript_state_dict

    with forked_rng(0):  # default init (then overwritten) must not advance the caller's global RNG
        net = _Pool3Net()
    net.load_state_dict(torchscript_state_dict(path))
    return net


def resolve_inception_weights(path: str | Path | None = None) -> tuple[Path | None, bool]:
    """(weights file, given explicitly?). Order: `path`, $DIFFBALANCE_FID_WEIGHTS, ../shared/data/fid-inception,
    $DIFFBALANCE_SHARED/data/fid-inception; (None, False) means: use the online path."""
    explicit = path or os.environ.get(WEIGHTS_ENV)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            source = "--fid-weights" if path else f"${WEIGHTS_ENV}"
            raise DiffbalanceError(f"Inception weights {p} (from {source}) do not exist",
                                   "give the path of an existing file")
        return p, True
    for p in shared_paths("data", "fid-inception", KNOWN_TORCHSCRIPT):
        if p.is_file():
            return p, False
    return None, False


def _download_inception() -> Path:
    """The normal online path: torch-fidelity's weights through the torch hub cache (as torchmetrics does)."""
    from torch.hub import download_url_to_file, get_dir

    target = Path(get_dir()) / "checkpoints" / Path(INCEPTION_URL).name
    if not target.is_file():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            download_url_to_file(INCEPTION_URL, str(target), progress=False)
        except Exception as err:  # noqa: BLE001 — offline, proxy, HTTP errors all mean the same to the user
            raise DiffbalanceError(
                f"no Inception-V3 FID weights here and the download failed ({type(err).__name__})",
                f"pass --fid-weights PATH or set {WEIGHTS_ENV}=PATH to {KNOWN_TORCHSCRIPT} or a pytorch-fid / "
                "torch-fidelity .pth file",
            ) from None
    return target


class InceptionPool3:
    """Inception-V3 (TF 2015-12-05) pool3 features; resize to 299 on the device, scale x/127.5 − 1, fp32."""

    dim = 2048
    feature_dtype = "float32"

    def __init__(self, net: nn.Module, checksum: str, weights_path: str, device: DeviceLike,
                 batch_size: int | None = None, resize: str = "bilinear-torch"):
        if resize not in RESIZE_MODES:
            raise DiffbalanceError(f"unknown resize mode {resize!r}", f"use one of {', '.join(RESIZE_MODES)}")
        device = resolve_device(device)
        self.fast = fast_gpu_path(device)
        self.net = net.to(device, memory_format=torch.channels_last if self.fast else torch.preserve_format)
        self.net = self.net.eval().float()
        self.checksum, self.weights_path, self.device = checksum, weights_path, device
        self.batch_size = extraction_batch(batch_size, device, INCEPTION_CPU_BATCH)  # None: 8 on the CPU, else 256
        self.resize = resize
        self.name = "inception-v3-2015-12-05-pool3"
        self.conv_math = "tf32" if self.fast else "fp32"  # recorded with every score

    @torch.inference_mode()
    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        x = to_rgb(x.to(self.device, non_blocking=True)).float()  # (B, 3, H, W) in [0, 255]
        x = resize_299(x, self.resize)  # (B, 3, 299, 299), the batch's only full-size buffer
        if self.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x.div_(127.5).sub_(1.0))  # (B, 2048); scaled in place: the same numbers as x / 127.5 - 1

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with conv_settings(self.device):
            return _batched(images, self.batch_size, self._batch)


_LOADED: dict[tuple, tuple[nn.Module, str, bool]] = {}  # (file, size, mtime, device) → (net, sha256, TorchScript?)


def _check_torchscript(path: Path, checksum: str, torchscript: bool, explicit: bool) -> None:
    """TorchScript runs code from the file: only the known file, or one the user named explicitly."""
    if torchscript and not explicit and checksum != KNOWN_TORCHSCRIPT_SHA256:
        raise DiffbalanceError(
            f"{path} does not have the sha256 of {KNOWN_TORCHSCRIPT} (got {checksum[:12]}…)",
            f"restore the file, or name it explicitly with --fid-weights / {WEIGHTS_ENV} to use it anyway",
        )


def _load_network(path: Path, device: torch.device, explicit: bool) -> tuple[nn.Module, str]:
    """(network, sha256) of `path` on `device`, loaded once per process (the file's size and mtime are part of
    the key, so a replaced file is loaded again); the TorchScript check runs before loading and on every reuse."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(device))
    if key not in _LOADED:
        checksum, torchscript = sha256_file(path), _is_torchscript(path)
        _check_torchscript(path, checksum, torchscript, explicit)
        net = torch.jit.load(str(path), map_location="cpu") if torchscript else _load_state_dict_net(path)
        while len(_LOADED) >= MAX_LOADED_NETWORKS:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = (net.to(device), checksum, torchscript)
    net, checksum, torchscript = _LOADED[key]
    _check_torchscript(path, checksum, torchscript, explicit)
    return net, checksum


def load_inception(weights: str | Path | None = None, device: DeviceLike = "auto",
                   batch_size: int | None = None, resize: str = "bilinear-torch",
                   allow_download: bool = True) -> InceptionPool3:
    """Find and load the Inception weights (see `resolve_inception_weights`), else download them; a network
    already loaded in this process for the same file and device is reused. `batch_size` None: `extraction_batch`."""
    device = resolve_device(device)  # "auto" too
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" share one loaded network
        device = torch.device("cuda", torch.cuda.current_device())
    path, explicit = resolve_inception_weights(weights)
    if path is None:
        if not allow_download:
            raise DiffbalanceError(
                "no Inception-V3 FID weights found (downloads are off)",
                f"pass --fid-weights PATH or set {WEIGHTS_ENV}=PATH to {KNOWN_TORCHSCRIPT} or a .pth state dict",
            )
        path, explicit = _download_inception(), True
    net, checksum = _load_network(path, device, explicit)
    return InceptionPool3(net, checksum, str(path), device, batch_size, resize)


@register_extractor("inception", help="Inception-V3 pool3 (TF 2015-12-05), the paper's and every published FID's")
def build_inception(cfg, device: torch.device, domain_model=None) -> InceptionPool3:
    """`cfg`: a FidConfig (weights_path, batch_size, resize, allow_download)."""
    return load_inception(cfg.weights_path, device, cfg.batch_size, cfg.resize, cfg.allow_download)


class RandomConvFeatures:
    """A tiny fixed-seed random conv net (fast tests only; its scores mean nothing about image quality)."""

    feature_dtype = "float32"
    resize = "none"

    def __init__(self, dim: int = 32, seed: int = 0, device: DeviceLike = "auto",
                 batch_size: int | None = None):
        g = generator(seed)
        with forked_rng(seed):  # the layers' default init draws from the global RNG; the caller's stream is kept
            self.net = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Tanh(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Tanh(),
                nn.Conv2d(16, dim, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5))
        self.device = resolve_device(device)  # "auto" too
        self.batch_size, self.dim = extraction_batch(batch_size, self.device), dim
        self.net.to(self.device).eval()
        self.checksum = _params_sha256(self.net)
        self.name = f"random-conv-{dim}d-seed{seed}"

    @torch.inference_mode()
    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(to_rgb(x.to(self.device)).float() / 127.5 - 1.0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return _batched(images, self.batch_size, self._batch)


@register_extractor("random", help="a tiny fixed-seed random conv net for fast tests (its scores mean nothing)")
def build_random(cfg, device: torch.device, domain_model=None) -> RandomConvFeatures:
    return RandomConvFeatures(device=device, batch_size=cfg.batch_size)


class DomainFeatures:
    """Features of a classifier trained on the balanced real set: any object with `.features(uint8) -> (N, D)`.

    Scores from it are domain-FID (not Inception FID): not comparable with the paper's Table 2 or other papers.
    """

    feature_dtype = "float32"
    resize = "classifier-native"
    score = DOMAIN_SCORE  # what its distances are called, wherever they are reported

    def __init__(self, model, batch_size: int | None = None, checksum: str | None = None):
        if not callable(getattr(model, "features", None)):
            raise DiffbalanceError("domain features need a classifier with a .features(images) method",
                                   "pass a trained classifier (diffbalance.classify)")
        self.model = model
        self.batch_size = extraction_batch(batch_size, "cpu")  # None: DEFAULT_BATCH
        self.checksum = checksum or getattr(model, "checksum", None) or _model_sha256(model)
        self.name = f"{DOMAIN_SCORE}: {type(model).__name__}"
        self.dim = -1  # known after the first call

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = _batched(images, self.batch_size, lambda x: torch.as_tensor(self.model.features(x)).flatten(1))
        self.dim = int(out.shape[1]) if out.ndim == 2 else self.dim
        return out


@register_extractor("domain", help="features of the classifier trained on the balanced real set (domain-FID, "
                    "not Inception FID)", needs_classifier=True)
def build_domain(cfg, device: torch.device, domain_model=None) -> DomainFeatures:
    """Runs where `domain_model` (the classifier) is; `device` is not used."""
    if domain_model is None:
        raise DiffbalanceError("domain-FID needs the classifier trained on the balanced real set",
                               "pass domain_model= (an object with .features(images))")
    return DomainFeatures(domain_model, cfg.batch_size)


def _params_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def _model_sha256(model) -> str:
    """Checksum of a classifier's weights; '' (no caching) when it has none we can read."""
    for obj in (model, getattr(model, "model", None), getattr(model, "net", None)):
        if isinstance(obj, nn.Module):
            return _params_sha256(obj)
    return ""
