"""What FID hides: improved precision/recall, KID, per-class FID. Every random choice takes an explicit seed.

- Precision/recall: Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative
  Models", eq. 1–2: each sample's manifold is the union of balls reaching its k-th nearest neighbour (k = 3);
  precision = share of generated samples inside the real manifold, recall = share of real samples inside the
  generated one.
- KID: Bińkowski et al. 2018, unbiased MMD² with the kernel k(x, y) = (x·y / d + 1)³, averaged over seeded
  subsets — torch-fidelity's `kid_features_to_metric`.
- Per-class FID: eq. 11 between the generated and the real images of one class.
"""

from __future__ import annotations

import torch

from diffbalance.evaluate.fid.frechet import frechet_distance, gaussian_stats
from diffbalance.seeding import generator


def seeded_subset(features: torch.Tensor, max_count: int, seed: int) -> torch.Tensor:
    """At most `max_count` rows, chosen without replacement by `seed` (all rows, in order, if there are fewer)."""
    if len(features) <= max_count:
        return features
    return features[torch.randperm(len(features), generator=generator(seed))[:max_count]]


def _kth_neighbour_radii(x: torch.Tensor, k: int, batch_rows: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (N,)."""
    radii = []
    for i in range(0, len(x), batch_rows):
        d = torch.cdist(x[i : i + batch_rows], x)  # (B, N)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the point itself (distance 0)
    return torch.cat(radii)


def _share_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_rows: int) -> float:
    """Share of query rows within radii[j] of some centre j."""
    inside = 0
    for i in range(0, len(queries), batch_rows):
        d = torch.cdist(queries[i : i + batch_rows], centres)  # (B, M)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, max_count: int = 10_000,
                     seed: int = 0, batch_rows: int = 1024) -> dict:
    """Improved precision and recall of `fake` against `real` features (N, D); subsets of `max_count`, seeded."""
    real = seeded_subset(real.double(), max_count, seed)
    fake = seeded_subset(fake.double(), max_count, seed + 1)
    if len(real) <= k or len(fake) <= k:
        return {"precision": None, "recall": None, "k": k, "n_real": len(real), "n_fake": len(fake),
                "note": f"needs more than k = {k} samples per side"}
    r_real = _kth_neighbour_radii(real, k, batch_rows)
    r_fake = _kth_neighbour_radii(fake, k, batch_rows)
    return {
        "precision": _share_inside(fake, real, r_real, batch_rows),
        "recall": _share_inside(real, fake, r_fake, batch_rows),
        "k": k, "n_real": len(real), "n_fake": len(fake), "seed": seed,
    }


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict:
    """KID mean and std over `subsets` seeded subsets (size capped at the smaller set)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    size = min(subset_size, len(real), len(fake))
    if size < 2:
        return {"kid_mean": None, "kid_std": None, "subsets": subsets, "subset_size": size,
                "note": "needs at least 2 samples per side"}
    out = kid_features_to_metric(
        real.double().cpu(), fake.double().cpu(), kid_subsets=subsets, kid_subset_size=size, rng_seed=seed,
        verbose=False, kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
    )
    return {"kid_mean": out["kernel_inception_distance_mean"], "kid_std": out["kernel_inception_distance_std"],
            "subsets": subsets, "subset_size": size, "seed": seed, "kernel": "poly(d=3, gamma=1/dim, coef0=1)"}


def per_class_fid(real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor,
                  class_names: tuple[str, ...]) -> dict[str, dict]:
    """FID(generated of class c, real of class c) for every class with generated images.

    With fewer images than feature dimensions Σ is singular and FID is biased upwards: compare only
    numbers with the same n_real/n_fake.
    """
    out = {}
    for c in sorted(set(fake_labels.tolist())):
        r, f = real[real_labels == c], fake[fake_labels == c]
        fid = frechet_distance(gaussian_stats(r), gaussian_stats(f)) if len(r) >= 2 and len(f) >= 2 else None
        out[class_names[c]] = {"fid": fid, "n_real": len(r), "n_fake": len(f)}
    return out
