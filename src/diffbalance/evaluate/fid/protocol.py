"""The paper's FID protocol (eq. 11: original balanced train vs rebalanced set) and what it hides.

`fid(a, b, cfg, device)` is one number with its provenance; `quality_report(original, rebalanced, generated, cfg,
device)` adds FID/precision/recall/KID of the generated images alone against the real images of the same classes,
and per-class FID. Every result records sample counts, resize mode, weights checksum, feature dtype and device.
The device ("auto", "cpu", "cuda:N" or a torch.device) is an argument, resolved once per call, not a config field;
statistics, the matrix square root, precision/recall and KID run there too (float64).

Each image is embedded once: pass one `fid_embedder(cfg, device)` to every call of a run (it keeps the loaded
network and every feature it made), and the rebalanced set as its parts `(real, fill)`, whose statistics are
combined from the parts' own (`Embedder.stats_of_parts`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import torch

from diffbalance.infra.configs import Config, current_path
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import DeviceLike, describe, entry_device, resolve_device
from diffbalance.infra.distributed import current
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.registry import Entry
from diffbalance.evaluate.fid.cache import FeatureCache
from diffbalance.evaluate.fid.embedder import Embedder
from diffbalance.evaluate.fid.extra import kid, per_class_fid, precision_recall
from diffbalance.evaluate.fid.extractors import EXTRACTORS, Builder
from diffbalance.evaluate.fid.features import FeatureExtractor, ResizeMode
from diffbalance.evaluate.fid.frechet import frechet_distance, gaussian_stats
from diffbalance.evaluate.fid.streamed import streamed_quality

POSITIVE = ("max_images_pr", "pr_k", "kid_subsets", "kid_subset_size")  # batch_size: positive or None


def available_extractors() -> list[str]:
    """The names of every registered feature kind, sorted."""
    return EXTRACTORS.available()


def extractor_kind(name: str, key: str = "") -> Entry[Builder]:
    """The feature kind `name` (its builder `.obj`, `needs_classifier`); a one-line error listing the available
    ones (naming config key `key` if given)."""
    return EXTRACTORS.entry(name, where=key if "." in key else "")


def describe_extractors() -> str:
    """Every feature kind with its one-line help, for command help texts: 'domain: …; inception: …; random: …'."""
    return EXTRACTORS.describe()


@dataclasses.dataclass(frozen=True)
class FidConfig(Config):
    """How generation quality is measured (the `fid:` section of a run, and `diffbalance fid`'s options).
    The device is not part of it: it is passed to `fid` / `quality_report` / `build_extractor`."""

    features: str = "inception"  # a registered kind: "inception" (the paper's), "domain", "random" (tests), …
    weights_path: str | None = None  # Inception weights (TorchScript or .pth); None → env, ../shared, download
    resize: ResizeMode = "bilinear-torch"  # 32→299: "bilinear-torch" (F.interpolate, pytorch-fid) or "bilinear-tf1x"
    batch_size: int | None = None  # images per forward pass; None = auto: 256, Inception on the CPU 8 (lean, as fast)
    max_images_pr: int = 10_000  # precision/recall: seeded subset of at most this many images per side
    pr_k: int = 3  # precision/recall: k-th nearest neighbour radius
    kid_subsets: int = 100  # KID: number of seeded subsets
    kid_subset_size: int = 1000  # KID: images per subset (capped at the smaller set)
    seed: int = 0  # every random subset (P/R, KID) derives from it
    cache: bool = True  # feature statistics cached in $DIFFBALANCE_CACHE/fid (~/.cache/diffbalance/fid)
    allow_download: bool = True  # fetch torch-fidelity's Inception weights if none are found locally

    def validate(self) -> None:
        extractor_kind(self.features, current_path("features"))
        self.require(self.batch_size is None or self.batch_size >= 1, "batch_size",
                     "a positive integer, or null for auto (256; Inception on the CPU: 8)")
        for name in POSITIVE:
            self.require(getattr(self, name) >= 1, name, "a positive integer")


def build_extractor(cfg: FidConfig, device: DeviceLike = "auto", domain_model=None) -> FeatureExtractor:
    """The feature network `cfg.features` names, on `device` (domain features run where the classifier is)."""
    return extractor_kind(cfg.features).obj(cfg, entry_device(device), domain_model)


def fid_embedder(cfg: FidConfig = FidConfig(), device: DeviceLike = "auto", domain_model=None,
                 extractor: FeatureExtractor | None = None) -> Embedder:
    """The feature network `cfg` names on `device`, with the disk cache `cfg.cache` asks for: make one per run and
    pass it to every `fid` / `quality_report` call, so each image goes through the network once."""
    device = entry_device(device)
    extractor = extractor or build_extractor(cfg, device, domain_model)
    return Embedder(extractor, FeatureCache() if cfg.cache else None, stats_device=device)


def _provenance(emb: Embedder) -> dict:
    """What every score states: features, preprocessing, weights, dtypes and the device the features ran on."""
    extractor = emb.extractor
    device = resolve_device(getattr(extractor, "device", None) or emb.stats_device)
    name = extractor.name
    return {
        "features": name,
        "resize": extractor.resize,
        "weights_sha256": extractor.checksum,
        "feature_dtype": getattr(extractor, "feature_dtype", "float32"),
        **({"batch_size": extractor.batch_size} if hasattr(extractor, "batch_size") else {}),  # auto resolved
        **({"conv_math": extractor.conv_math} if hasattr(extractor, "conv_math") else {}),
        "statistics_dtype": "float64",
        "device": describe(device),
        **({"processes": current().world_size} if current().active else {}),
        "score": getattr(extractor, "score", "FID"),  # what the number is: FID, or domain-FID
    }


def _check_sizes(*sets: tuple[str, ImageSet]) -> None:
    for label, s in sets:
        if len(s) < 2:
            raise DiffbalanceError(f"FID needs at least 2 images per set; {label} ({s.source}) has {len(s)}",
                                   "pass larger image sets")


def _embedder(embedder: Embedder | None, cfg: FidConfig, device: DeviceLike, domain_model,
              extractor: FeatureExtractor | None) -> Embedder:
    return embedder if embedder is not None else fid_embedder(cfg, device, domain_model, extractor)


def fid(a: ImageSet, b: ImageSet, cfg: FidConfig = FidConfig(), device: DeviceLike = "auto", domain_model=None,
        extractor: FeatureExtractor | None = None, embedder: Embedder | None = None) -> dict:
    """FID(a, b) (eq. 11) with how it was measured (`embedder`: one shared by the calls of a run)."""
    _check_sizes(("A", a), ("B", b))
    start = time.perf_counter()
    emb = _embedder(embedder, cfg, device, domain_model, extractor)
    ea, eb = emb(a.images), emb(b.images)
    return {
        "fid": frechet_distance(ea.stats, eb.stats, emb.stats_device),
        "n_a": len(a), "n_b": len(b),
        **_provenance(emb),
        "cache_hits": int(ea.cache_hit) + int(eb.cache_hit),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _in_memory_quality(emb: Embedder, original: ImageSet, generated: ImageSet, cfg: FidConfig, on) -> dict:
    """The measures of `streamed.streamed_quality`, from both sets' feature rows held in memory."""
    orig = emb(original.images, need_features=True)  # per-class real features are its rows
    gen = emb(generated.images, need_features=True)
    classes = sorted(set(generated.labels.tolist()))
    real_feats = orig.features[torch.isin(original.labels, torch.tensor(classes))]
    return {
        "original_stats": orig.stats,
        "generated_fid": frechet_distance(gaussian_stats(real_feats, on), gen.stats, on),
        "n_real_same": len(real_feats),
        "per_class_fid": per_class_fid(orig.features, original.labels, gen.features, generated.labels,
                                       original.class_names, on),
        "precision_recall": precision_recall(real_feats, gen.features, cfg.pr_k, cfg.max_images_pr, cfg.seed,
                                             device=on),
        "kid": kid(real_feats, gen.features, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed, device=on),
    }


def quality_report(original_train: ImageSet, rebalanced: ImageSet | Sequence[ImageSet], generated: ImageSet,
                   cfg: FidConfig = FidConfig(), device: DeviceLike = "auto", domain_model=None,
                   extractor: FeatureExtractor | None = None, embedder: Embedder | None = None) -> dict:
    """The paper's FID(original balanced train, rebalanced) plus what it hides about the generated images.

    `rebalanced` is the rebalanced set, or its parts (e.g. `(imbalanced real, generated)`): its statistics are
    then combined from the parts' (exact), and no image is embedded twice. `embedder`: one shared by the calls
    of a run (`fid_embedder`), so the original set and the real part are embedded once per run, not per call."""
    parts = [rebalanced] if isinstance(rebalanced, ImageSet) else list(rebalanced)
    n_rebalanced = sum(len(p) for p in parts)
    _check_sizes(("the original training set", original_train), ("the generated set", generated))
    if n_rebalanced < 2:
        raise DiffbalanceError(f"FID needs at least 2 images per set; the rebalanced set has {n_rebalanced}",
                               "pass larger image sets")
    if generated.class_names != original_train.class_names:
        raise DiffbalanceError("generated and original images have different classes", "use the same class list")
    start = time.perf_counter()
    emb = _embedder(embedder, cfg, device, domain_model, extractor)
    on = emb.stats_device  # statistics, sqrtm, P/R and KID in float64 where the features were made
    measures = (streamed_quality if original_train.stored or generated.stored else _in_memory_quality)(
        emb, original_train, generated, cfg, on)
    paper_fid = frechet_distance(measures.pop("original_stats"), emb.stats_of_parts([p.images for p in parts]), on)
    classes = sorted(set(generated.labels.tolist()))  # only classes that got generated images
    return {
        "protocol_fid": {"fid": paper_fid, "a": "original balanced train", "b": "rebalanced set",
                         "n_a": len(original_train), "n_b": n_rebalanced},
        "generated_fid": {"fid": measures.pop("generated_fid"),
                          "a": "real original images of the generated classes", "b": "generated images",
                          "classes": [original_train.class_names[c] for c in classes],
                          "n_a": measures.pop("n_real_same"), "n_b": len(generated)},
        **measures,
        **_provenance(emb),
        "config": cfg.to_dict(),
        "seconds": round(time.perf_counter() - start, 3),
    }

