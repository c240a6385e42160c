"""The quality report's measures of sets kept on disk (data.store), in memory bounded by a chunk, not by the sets.

In memory, `quality_report` holds both sets' feature rows (N, D). For a stored set that is 8 KB per image with the
Inception's 2,048 dimensions, so here each set is embedded once, class by class, a chunk of ≤ STREAM_CHUNK images
at a time: each class's statistics are combined exactly from its chunks (`combine_stats`), the per-class FID is
taken as the pair of classes is done, the classes' statistics are combined into the set's, and the only rows kept
are those precision/recall and KID draw (their seeded subsets, `subset_rows` / `kid_picks`: the same rows as in
memory, so the same numbers; the statistics agree with the in-memory ones to float64 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.evaluate.fid import embedder as embedding
from diffbalance.evaluate.fid.extra import kid_of_picks, kid_picks, kid_too_small, precision_recall, subset_rows
from diffbalance.evaluate.fid.frechet import GaussianStats, combine_stats, frechet_distance, gaussian_stats
from diffbalance.evaluate.fid.sharded import extract_features


@dataclass
class ClassPass:
    """One set embedded class by class: the rows to keep (set positions), the rows kept, each class's statistics."""

    data: ImageSet
    keep: np.ndarray  # sorted set positions whose feature rows are kept
    rows: dict[int, torch.Tensor] = field(default_factory=dict)  # set position → (D,) float32
    stats: list[GaussianStats] = field(default_factory=list)  # of every class with images, in class order

    def embed_class(self, c: int, extractor, on) -> GaussianStats | None:
        """Class c's (μ, Σ, n) (None without images); its rows in `keep` are kept."""
        positions = torch.nonzero(self.data.labels == c).flatten().numpy()
        stats = None
        for chunk in _chunks(positions):
            view = self.data.images.take(chunk) if self.data.stored else self.data.images[torch.as_tensor(chunk)]
            features = extract_features(view, extractor)  # (len(chunk), D) float32, CPU
            for k in np.flatnonzero(np.isin(chunk, self.keep)):
                self.rows[int(chunk[k])] = features[k].clone()
            part = gaussian_stats(features, on) if len(features) >= 2 else _one(features)
            stats = part if stats is None else combine_stats(stats, part)
        if stats is not None:
            self.stats.append(stats)
        return stats

    def gather(self, positions: np.ndarray) -> torch.Tensor:
        """The kept rows at set `positions`, in that order (len(positions), D)."""
        return torch.stack([self.rows[int(p)] for p in positions]) if len(positions) else torch.zeros(0, 0)


def _chunks(positions: np.ndarray) -> list[np.ndarray]:
    """≤ STREAM_CHUNK positions each; a last chunk of one joins the one before (a chunk of ≥ 2 has a Σ)."""
    chunk = embedding.STREAM_CHUNK
    parts = [positions[a : a + chunk] for a in range(0, len(positions), chunk)]
    if len(parts) > 1 and len(parts[-1]) < 2:
        parts[-2:] = [np.concatenate(parts[-2:])]
    return parts


def _one(features: torch.Tensor) -> GaussianStats:
    """The statistics of one feature row: μ the row, no spread (it adds nothing to the scatter when combined)."""
    mu = features[0].double().numpy()
    return GaussianStats(mu, np.zeros((len(mu), len(mu))), 1)


def streamed_quality(emb: embedding.Embedder, original: ImageSet, generated: ImageSet, cfg, on) -> dict:
    """The measures `quality_report` takes from the feature rows — the original set's statistics, the generated
    FID, per-class FID, precision/recall, KID — with the rows of neither set held: {"original_stats", "generated_fid",
    "per_class_fid", "precision_recall", "kid"}."""
    classes = sorted(set(generated.labels.tolist()))  # only classes that got generated images
    same = torch.nonzero(torch.isin(original.labels, torch.tensor(classes))).flatten().numpy()  # real rows used
    pr_real = subset_rows(len(same), cfg.max_images_pr, cfg.seed)  # positions within `same`
    pr_fake = subset_rows(len(generated), cfg.max_images_pr, cfg.seed + 1)
    size, picks = kid_picks(len(same), len(generated), cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)
    kid_real = np.unique(np.concatenate([p[0] for p in picks])) if picks else np.zeros(0, np.int64)
    kid_fake = np.unique(np.concatenate([p[1] for p in picks])) if picks else np.zeros(0, np.int64)
    real = ClassPass(original, np.unique(same[np.concatenate([pr_real, kid_real]).astype(np.int64)]))
    fake = ClassPass(generated, np.unique(np.concatenate([pr_fake, kid_fake]).astype(np.int64)))

    per_class, real_same, extractor = {}, [], emb.extractor
    for c in range(len(original.class_names)):
        r = real.embed_class(c, extractor, on)
        if c not in classes:
            continue
        f = fake.embed_class(c, extractor, on)
        real_same += [r] if r is not None else []
        n_r, n_f = (r.n if r else 0), f.n
        fid = frechet_distance(r, f, on) if n_r >= 2 and n_f >= 2 else None
        per_class[original.class_names[c]] = {"fid": fid, "n_real": n_r, "n_fake": n_f}
    if picks:
        x_rows = kid_real  # the KID rows of `same`, compacted; the picks renumbered into them
        x = real.gather(same[x_rows])
        y = fake.gather(kid_fake)
        local = [(np.searchsorted(x_rows, a), np.searchsorted(kid_fake, b)) for a, b in picks]
        kid_result = kid_of_picks(x, y, local, size, cfg.seed, on)
    else:
        kid_result = kid_too_small(cfg.kid_subsets, size)
    return {
        "original_stats": combine_stats(*real.stats),
        "generated_fid": frechet_distance(combine_stats(*real_same), combine_stats(*fake.stats), on),
        "n_real_same": len(same),
        "per_class_fid": per_class,
        "precision_recall": precision_recall(real.gather(same[pr_real]), fake.gather(pr_fake), cfg.pr_k,
                                             cfg.max_images_pr, cfg.seed, device=on),
        "kid": kid_result,
    }
