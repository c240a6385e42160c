"""Feature statistics cached on disk (safetensors), so a set — above all the original training set — is embedded
once across runs (`embedder.Embedder` reads and writes it; under torchrun rank 0 alone writes).

Key = sha256(image bytes and shape) + extractor checksum + resize mode. An entry holds μ, Σ (float64), n and,
when P/R or KID asked for them, the features (float32). Writes are atomic; an unreadable or inconsistent entry is
ignored and recomputed. Folder: `diffbalance.infra.paths.cache_dir("fid")` ($DIFFBALANCE_CACHE/fid, default
~/.cache/diffbalance/fid, beside the data cache's sets/).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from diffbalance.data.store import pixel_chunks
from diffbalance.infra.atomic import atomic_path
from diffbalance.evaluate.fid.features import FeatureExtractor
from diffbalance.evaluate.fid.frechet import GaussianStats
from diffbalance.infra.paths import cache_dir


@dataclass(frozen=True, eq=False)
class Embedding:
    stats: GaussianStats
    features: torch.Tensor | None  # (N, D) float32, kept only when asked for
    cache_hit: bool = False


def images_sha256(images: torch.Tensor) -> str:
    h = hashlib.sha256(f"{images.dtype}{tuple(images.shape)}".encode())
    for rows in pixel_chunks(images):  # the same bytes in memory or on disk (data.store)
        h.update(rows)
    return h.hexdigest()


def cache_key(images: torch.Tensor, extractor: FeatureExtractor) -> str | None:
    """None when the extractor has no checksum (nothing safe to key on)."""
    return entry_key(images_sha256(images), extractor) if extractor.checksum else None


def entry_key(images_hash: str, extractor: FeatureExtractor) -> str:
    parts = f"{images_hash}|{extractor.checksum}|{extractor.resize}|{extractor.name}"
    return hashlib.sha256(parts.encode()).hexdigest()


class FeatureCache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else cache_dir("fid")

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get(self, key: str, need_features: bool) -> Embedding | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            t = load_file(str(path))
            stats = GaussianStats(t["mu"].numpy(), t["sigma"].numpy(), int(t["n"]))
            features = t.get("features")
            ok = stats.sigma.shape == (len(stats.mu), len(stats.mu)) and np.isfinite(stats.sigma).all()
            if features is not None:
                ok = ok and features.shape == (stats.n, len(stats.mu))
        except Exception:  # noqa: BLE001 — a corrupt or half-foreign file: recompute
            return None
        if not ok or (need_features and features is None):
            return None
        return Embedding(stats, features, cache_hit=True)

    def put(self, key: str, emb: Embedding, meta: dict[str, str]) -> None:
        tensors = {
            "mu": torch.from_numpy(np.ascontiguousarray(emb.stats.mu)),
            "sigma": torch.from_numpy(np.ascontiguousarray(emb.stats.sigma)),
            "n": torch.tensor(emb.stats.n, dtype=torch.int64),
        }
        if emb.features is not None:
            tensors["features"] = emb.features.contiguous()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path(key)) as tmp:
                save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()})
        except OSError:  # a read-only cache must not stop an evaluation
            pass
