"""Each image through the feature network once: an `Embedder` holds one extractor and remembers, per image
content, the features it has made.

- `features(images)` embeds only the images it has not seen (by a digest of each image's bytes), so a set that
  shares images with earlier ones — the rebalanced set (the imbalanced real images + the fill), oversampled copies,
  the same original set for every method of a run — costs hashing, not a forward pass.
- `embedder(images)` gives the set's (μ, Σ) (and its features when asked), through the disk cache when one is
  given (`FeatureCache`, keyed by the whole set), and remembers the set's statistics for the Embedder's life.
- `stats_of_parts(parts)` is the statistics of the union of image sets (e.g. real part + fill part) from the
  parts' own statistics (`combine_stats`): nothing is concatenated or embedded twice.

Under torchrun the images still to embed are split over the ranks and gathered (`sharded.extract_features`);
rank 0 alone writes the disk cache (the others wait for it), and a disk hit counts only if every rank found it
(otherwise all embed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from diffbalance.data.store import is_stored, pixel_chunks
from diffbalance.infra import distributed
from diffbalance.infra.device import DeviceLike, resolve_device
from diffbalance.evaluate.fid.cache import Embedding, FeatureCache, entry_key, images_sha256
from diffbalance.evaluate.fid.features import FeatureExtractor
from diffbalance.evaluate.fid.frechet import GaussianStats, combine_stats, gaussian_stats
from diffbalance.evaluate.fid.sharded import extract_features


STREAM_CHUNK = 4096  # images of a stored set embedded at a time


def image_digests(images: torch.Tensor) -> list[bytes]:
    """One 16-byte BLAKE2b digest per image (of its bytes; every image of a tensor has the same shape)."""
    return [hashlib.blake2b(row, digest_size=16).digest() for rows in pixel_chunks(images) for row in rows]


class Embedder:
    """One feature extractor and what it has embedded: every distinct image goes through the network once."""

    def __init__(self, extractor: FeatureExtractor, cache: FeatureCache | None = None,
                 stats_device: DeviceLike | None = None):
        self.extractor, self.cache = extractor, cache
        # the statistics where the features were made (CUDA: float64 there): given, else the extractor's device,
        # else (an extractor that runs where its model is) "auto"
        self.stats_device = resolve_device(stats_device or getattr(extractor, "device", None) or "auto")
        self._rows: dict[bytes, torch.Tensor] = {}  # image digest → its feature row (D,), float32, CPU
        self._stats: dict[str, tuple[GaussianStats, bool]] = {}  # set sha256 → (μ, Σ, n), from the disk cache?

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, D) float32 (CPU) of `images` in their order; only images not seen before are embedded. A
        stored set (data.store) is embedded a chunk at a time and its rows are not kept for later sets."""
        if is_stored(images):
            parts = [extract_features(images.take(slice(a, a + STREAM_CHUNK)), self.extractor)
                     for a in range(0, len(images), STREAM_CHUNK)]
            return torch.cat(parts) if parts else torch.zeros(0, max(0, getattr(self.extractor, "dim", 0)))
        digests = image_digests(images)
        todo: dict[bytes, int] = {}  # digest → first position, for images never embedded
        for i, h in enumerate(digests):
            if h not in self._rows and h not in todo:
                todo[h] = i
        if todo:
            new = extract_features(images[list(todo.values())], self.extractor)  # (len(todo), D)
            self._rows.update(zip(todo, new))
        if not digests:
            return torch.zeros(0, max(0, getattr(self.extractor, "dim", 0)))
        return torch.stack([self._rows[h] for h in digests])  # (N, D)

    def __call__(self, images: torch.Tensor, need_features: bool = False) -> Embedding:
        """(μ, Σ) of the set, and its features when `need_features`, through the disk cache when there is one."""
        set_hash = images_sha256(images)
        if set_hash in self._stats:
            stats, hit = self._stats[set_hash]
            return Embedding(stats, self.features(images) if need_features else None, cache_hit=hit)
        key = entry_key(set_hash, self.extractor) if self.cache is not None and self.extractor.checksum else None
        emb = self._from_disk(key, need_features) if key else None
        if emb is None and is_stored(images) and not need_features and len(images) >= 2:
            emb = Embedding(self._streamed_stats(images), None)  # memory bounded by a chunk, not by the set
        if emb is None:
            features = self.features(images)
            emb = Embedding(gaussian_stats(features, self.stats_device), features if need_features else None)
            if key is not None:  # rank 0 writes while the others wait, so a later read finds it on every rank
                meta = {"extractor": self.extractor.name, "checksum": self.extractor.checksum,
                        "resize": self.extractor.resize, "images_sha256": set_hash}
                distributed.on_main(lambda: self.cache.put(key, emb, meta), share=False)
        elif emb.features is not None:  # the disk's features: no image of this set needs the network again
            self._rows.update(zip(image_digests(images), emb.features))
        self._stats[set_hash] = (emb.stats, emb.cache_hit)
        return emb

    def _streamed_stats(self, images) -> GaussianStats:
        """(μ, Σ, n) of a stored set, combined exactly (combine_stats) from chunks of ≥ 2 images."""
        starts = list(range(0, len(images), STREAM_CHUNK))
        if len(images) - starts[-1] < 2 and len(starts) > 1:  # a last chunk of one image joins the one before
            starts.pop()
        stops = starts[1:] + [len(images)]
        stats = None
        for a, b in zip(starts, stops):
            # a view: under torchrun each rank reads only its block of the chunk (evaluate.fid.sharded)
            part = gaussian_stats(extract_features(images.take(slice(a, b)), self.extractor), self.stats_device)
            stats = part if stats is None else combine_stats(stats, part)
        return stats

    def _from_disk(self, key: str, need_features: bool) -> Embedding | None:
        """The disk cache's entry, if every rank has it (ranks must take the same path: all embed, or none)."""
        hit = self.cache.get(key, need_features)
        if distributed.current().active and not all(distributed.gather(hit is not None)):
            return None
        return hit

    def stats_of_parts(self, parts: Sequence[torch.Tensor]) -> GaussianStats:
        """(μ, Σ, n) of the union of image sets, from each part's statistics (exact, `combine_stats`); a part
        of fewer than 2 images has no Σ of its own, and then the union's features are used."""
        parts = [p for p in parts if len(p)]
        if all(len(p) >= 2 for p in parts):
            return combine_stats(*(self(p).stats for p in parts))
        return gaussian_stats(torch.cat([self.features(p) for p in parts]), self.stats_device)


def embed(images: torch.Tensor, extractor: FeatureExtractor, cache: FeatureCache | None = None,
          need_features: bool = False) -> Embedding:
    """Features → (μ, Σ) of one set, through the cache when one is given."""
    return Embedder(extractor, cache)(images, need_features)
