"""The paper's FID protocol (eq. 11: original balanced train vs rebalanced set) and what it hides.

`fid(a, b, cfg, device)` is one number with its provenance; `quality_report(original, rebalanced, generated, cfg,
device)` adds FID/precision/recall/KID of the generated images alone against the real images of the same classes,
and per-class FID. Every result records sample counts, resize mode, weights checksum, feature dtype and device.
The device ("auto", "cpu", "cuda:N" or a torch.device) is an argument, resolved once per call, not a config field.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import torch

from diffbalance.configs import Config
from diffbalance.data.imageset import ImageSet
from diffbalance.device import DeviceLike, describe, resolve_device
from diffbalance.errors import DiffbalanceError
from diffbalance.evaluate.fid.cache import Embedding, FeatureCache, embed
from diffbalance.evaluate.fid.extra import kid, per_class_fid, precision_recall
from diffbalance.evaluate.fid.features import (
    DomainFeatures, FeatureExtractor, RandomConvFeatures, ResizeMode, load_inception,
)
from diffbalance.evaluate.fid.frechet import frechet_distance, gaussian_stats

FeatureKind = Literal["inception", "domain", "random"]
POSITIVE = ("batch_size", "max_images_pr", "pr_k", "kid_subsets", "kid_subset_size")


@dataclasses.dataclass(frozen=True)
class FidConfig(Config):
    """How generation quality is measured (the `fid:` section of a run, and `diffbalance fid`'s options).
    The device is not part of it: it is passed to `fid` / `quality_report` / `build_extractor`."""

    features: FeatureKind = "inception"  # "inception" (the paper's), "domain" (classifier features), "random" (tests)
    weights_path: str | None = None  # Inception weights (TorchScript or .pth); None → env, ../shared, download
    resize: ResizeMode = "bilinear-torch"  # 32→299: "bilinear-torch" (F.interpolate, pytorch-fid) or "bilinear-tf1x"
    batch_size: int = 64  # images per forward pass
    max_images_pr: int = 10_000  # precision/recall: seeded subset of at most this many images per side
    pr_k: int = 3  # precision/recall: k-th nearest neighbour radius
    kid_subsets: int = 100  # KID: number of seeded subsets
    kid_subset_size: int = 1000  # KID: images per subset (capped at the smaller set)
    seed: int = 0  # every random subset (P/R, KID) derives from it
    cache: bool = True  # feature statistics cached in $DIFFBALANCE_CACHE/fid (~/.cache/diffbalance/fid)
    allow_download: bool = True  # fetch torch-fidelity's Inception weights if none are found locally

    def validate(self) -> None:
        for name in POSITIVE:
            self.require(getattr(self, name) >= 1, name, "a positive integer")


def build_extractor(cfg: FidConfig, device: DeviceLike = "auto", domain_model=None) -> FeatureExtractor:
    """The feature network `cfg.features` names, on `device` (domain features run where the classifier is)."""
    device = resolve_device(device)
    if cfg.features == "inception":
        return load_inception(cfg.weights_path, device, cfg.batch_size, cfg.resize, cfg.allow_download)
    if cfg.features == "random":
        return RandomConvFeatures(device=device, batch_size=cfg.batch_size)
    if domain_model is None:
        raise DiffbalanceError("domain-FID needs the classifier trained on the balanced real set",
                               "pass domain_model= (an object with .features(images))")
    return DomainFeatures(domain_model, cfg.batch_size)


class _Embedder:
    """Embeds each distinct image tensor once per call (and once ever, with the disk cache)."""

    def __init__(self, extractor: FeatureExtractor, cfg: FidConfig):
        self.extractor, self.cache = extractor, FeatureCache() if cfg.cache else None
        self._memo: dict[int, Embedding] = {}

    def __call__(self, images: torch.Tensor, need_features: bool = False) -> Embedding:
        hit = self._memo.get(id(images))
        if hit is None or (need_features and hit.features is None):
            hit = self._memo[id(images)] = embed(images, self.extractor, self.cache, need_features)
        return hit


def _provenance(extractor: FeatureExtractor, device: torch.device) -> dict:
    """What every score states: features, preprocessing, weights, dtypes and the device the features ran on."""
    device = torch.device(getattr(extractor, "device", None) or device)
    name = extractor.name
    return {
        "features": name,
        "resize": extractor.resize,
        "weights_sha256": extractor.checksum,
        "feature_dtype": getattr(extractor, "feature_dtype", "float32"),
        "statistics_dtype": "float64",
        "device": describe(device),
        **({"note": "domain-FID (not Inception FID)"} if name.startswith("domain") else {}),
    }


def _check_sizes(*sets: tuple[str, ImageSet]) -> None:
    for label, s in sets:
        if len(s) < 2:
            raise DiffbalanceError(f"FID needs at least 2 images per set; {label} ({s.source}) has {len(s)}",
                                   "pass larger image sets")


def fid(a: ImageSet, b: ImageSet, cfg: FidConfig = FidConfig(), device: DeviceLike = "auto", domain_model=None,
        extractor: FeatureExtractor | None = None) -> dict:
    """FID(a, b) (eq. 11) with how it was measured."""
    _check_sizes(("A", a), ("B", b))
    start = time.perf_counter()
    device = resolve_device(device)
    extractor = extractor or build_extractor(cfg, device, domain_model)
    emb = _Embedder(extractor, cfg)
    ea, eb = emb(a.images), emb(b.images)
    return {
        "fid": frechet_distance(ea.stats, eb.stats),
        "n_a": len(a), "n_b": len(b),
        **_provenance(extractor, device),
        "cache_hits": int(ea.cache_hit) + int(eb.cache_hit),
        "seconds": round(time.perf_counter() - start, 3),
    }


def quality_report(original_train: ImageSet, rebalanced: ImageSet, generated: ImageSet, cfg: FidConfig = FidConfig(),
                   device: DeviceLike = "auto", domain_model=None, extractor: FeatureExtractor | None = None) -> dict:
    """The paper's FID(original balanced train, rebalanced) plus what it hides about the generated images."""
    _check_sizes(("the original training set", original_train), ("the rebalanced set", rebalanced),
                 ("the generated set", generated))
    if generated.class_names != original_train.class_names:
        raise DiffbalanceError("generated and original images have different classes", "use the same class list")
    start = time.perf_counter()
    device = resolve_device(device)
    extractor = extractor or build_extractor(cfg, device, domain_model)
    emb = _Embedder(extractor, cfg)
    orig = emb(original_train.images, need_features=True)  # embedded once; per-class real features are its rows
    gen = emb(generated.images, need_features=True)
    paper_fid = frechet_distance(orig.stats, emb(rebalanced.images).stats)

    classes = sorted(set(generated.labels.tolist()))  # only classes that got generated images
    same = torch.isin(original_train.labels, torch.tensor(classes))
    real_feats = orig.features[same]
    return {
        "protocol_fid": {"fid": paper_fid, "a": "original balanced train", "b": "rebalanced set",
                         "n_a": len(original_train), "n_b": len(rebalanced)},
        "generated_fid": {"fid": frechet_distance(gaussian_stats(real_feats), gen.stats),
                          "a": "real original images of the generated classes", "b": "generated images",
                          "classes": [original_train.class_names[c] for c in classes],
                          "n_a": len(real_feats), "n_b": len(generated)},
        "per_class_fid": per_class_fid(orig.features, original_train.labels, gen.features, generated.labels,
                                       original_train.class_names),
        "precision_recall": precision_recall(real_feats, gen.features, cfg.pr_k, cfg.max_images_pr, cfg.seed),
        "kid": kid(real_feats, gen.features, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed),
        **_provenance(extractor, device),
        "config": cfg.to_dict(),
        "seconds": round(time.perf_counter() - start, 3),
    }

