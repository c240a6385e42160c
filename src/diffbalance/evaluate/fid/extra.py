"""What FID hides: improved precision/recall, KID, per-class FID. Every random choice takes an explicit seed.

- Precision/recall: Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative
  Models", eq. 1–2: each sample's manifold is the union of balls reaching its k-th nearest neighbour (k = 3);
  precision = share of generated samples inside the real manifold, recall = share of real samples inside the
  generated one.
- KID: Bińkowski et al. 2018, unbiased MMD² with the kernel k(x, y) = (x·y / d + 1)³, averaged over seeded
  subsets — torch-fidelity's `kid_features_to_metric` (same subsets, same numbers), batched on the device.
- Per-class FID: eq. 11 between the generated and the real images of one class.
"""

from __future__ import annotations

import numpy as np
import torch

from diffbalance.evaluate.fid.frechet import frechet_distance, gaussian_stats
from diffbalance.infra.device import DeviceLike, resolve_device
from diffbalance.infra.seeding import generator

CHUNK_BYTES = 256 << 20  # one block of a distance or kernel matrix (P/R, KID) stays under this


def subset_rows(n: int, max_count: int, seed: int) -> np.ndarray:
    """The rows `seeded_subset` keeps of n: at most `max_count`, without replacement by `seed` (all, in order, if
    there are fewer)."""
    if n <= max_count:
        return np.arange(n)
    return torch.randperm(n, generator=generator(seed))[:max_count].numpy()


def seeded_subset(features: torch.Tensor, max_count: int, seed: int) -> torch.Tensor:
    """At most `max_count` rows, chosen without replacement by `seed` (all rows, in order, if there are fewer)."""
    if len(features) <= max_count:
        return features
    return features[torch.as_tensor(subset_rows(len(features), max_count, seed))]


def _chunk_rows(n_cols: int, bytes_per_value: int = 8) -> int:
    """Rows per block of an (rows, n_cols) distance or kernel matrix, so one block stays under CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(1, n_cols * bytes_per_value))


def _kth_neighbour_radii(x: torch.Tensor, k: int, batch_rows: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (N,)."""
    radii = []
    for i in range(0, len(x), batch_rows):
        d = torch.cdist(x[i : i + batch_rows], x)  # (B, N)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the point itself (distance 0)
    return torch.cat(radii)


def _share_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_rows: int) -> float:
    """Share of query rows within radii[j] of some centre j (counted on the device, one number read back)."""
    inside = torch.zeros((), dtype=torch.int64, device=queries.device)
    for i in range(0, len(queries), batch_rows):
        d = torch.cdist(queries[i : i + batch_rows], centres)  # (B, M)
        inside += (d <= radii[None, :]).any(dim=1).sum()
    return int(inside) / len(queries)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, max_count: int = 10_000,
                     seed: int = 0, batch_rows: int | None = None, device: DeviceLike = "cpu") -> dict:
    """Improved precision and recall of `fake` against `real` features (N, D); subsets of `max_count`, seeded.
    Distances in float64 on `device` (the CPU by default), `batch_rows` query rows at a time (None: as many as
    keep one block of distances under CHUNK_BYTES)."""
    device = resolve_device(device)  # "auto" too
    real = seeded_subset(real, max_count, seed).to(device, torch.float64)
    fake = seeded_subset(fake, max_count, seed + 1).to(device, torch.float64)
    if len(real) <= k or len(fake) <= k:
        return {"precision": None, "recall": None, "k": k, "n_real": len(real), "n_fake": len(fake),
                "note": f"needs more than k = {k} samples per side"}
    rows = batch_rows or _chunk_rows(max(len(real), len(fake)))
    r_real = _kth_neighbour_radii(real, k, rows)
    r_fake = _kth_neighbour_radii(fake, k, rows)
    return {
        "precision": _share_inside(fake, real, r_real, rows),
        "recall": _share_inside(real, fake, r_fake, rows),
        "k": k, "n_real": len(real), "n_fake": len(fake), "seed": seed,
    }


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x·y / d + 1)³ for every pair: (S, m, d) × (S, m, d) → (S, m, m)."""
    return (torch.bmm(a, b.transpose(1, 2)) / a.shape[-1] + 1) ** 3


def _mmd2_unbiased(k_xx: torch.Tensor, k_xy: torch.Tensor, k_yy: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² per subset (S,): off-diagonal means of K_XX and K_YY minus twice the mean of K_XY."""
    m = k_xx.shape[-1]
    off_diagonal = lambda k: k.sum(dim=(1, 2)) - k.diagonal(dim1=1, dim2=2).sum(dim=1)  # noqa: E731
    return (off_diagonal(k_xx) + off_diagonal(k_yy)) / (m * (m - 1)) - 2 * k_xy.sum(dim=(1, 2)) / (m * m)


def kid_picks(n_real: int, n_fake: int, subsets: int = 100, subset_size: int = 1000,
              seed: int = 0) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """KID's subset size (capped at the smaller set) and its `subsets` seeded (real rows, fake rows) picks:
    torch-fidelity's (`kid_features_to_metric`: np.random.RandomState(seed).choice, real then fake, per subset)."""
    size = min(subset_size, n_real, n_fake)
    if size < 2:
        return size, []
    rng = np.random.RandomState(seed)
    return size, [(rng.choice(n_real, size, replace=False), rng.choice(n_fake, size, replace=False))
                  for _ in range(subsets)]


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
        device: DeviceLike = "cpu") -> dict:
    """KID mean and std over `subsets` seeded subsets (size capped at the smaller set).

    The subsets are torch-fidelity's (`kid_picks`) and so are the numbers; the kernels are batched float64 matmuls
    on `device`, as many subsets at a time as keep the kernel matrices under CHUNK_BYTES."""
    size, picks = kid_picks(len(real), len(fake), subsets, subset_size, seed)
    return kid_of_picks(real, fake, picks, size, seed, device) if picks else kid_too_small(subsets, size)


def kid_too_small(subsets: int, size: int) -> dict:
    return {"kid_mean": None, "kid_std": None, "subsets": subsets, "subset_size": size,
            "note": "needs at least 2 samples per side"}


def kid_of_picks(real: torch.Tensor, fake: torch.Tensor, picks: list[tuple[np.ndarray, np.ndarray]], size: int,
                 seed: int, device: DeviceLike = "cpu") -> dict:
    """KID over the given (real rows, fake rows) picks of `size` ≥ 2 rows each (`kid_picks`: rows of `real` and
    `fake`)."""
    subsets = len(picks)
    device = resolve_device(device)  # "auto" too
    x, y = real.to(device), fake.to(device)  # (N_r, D), (N_f, D) as given; each block's rows go to float64
    per_block = max(1, CHUNK_BYTES // (8 * (3 * size * size + 2 * size * x.shape[1])))
    mmds = []
    for i in range(0, subsets, per_block):
        block = picks[i : i + per_block]
        xs = x[torch.as_tensor(np.stack([p[0] for p in block]), device=device)].double()  # (S, m, D)
        ys = y[torch.as_tensor(np.stack([p[1] for p in block]), device=device)].double()  # (S, m, D)
        mmds.append(_mmd2_unbiased(_poly_kernel(xs, xs), _poly_kernel(xs, ys), _poly_kernel(ys, ys)))
    mmd = torch.cat(mmds).cpu().numpy()
    return {"kid_mean": float(np.mean(mmd)), "kid_std": float(np.std(mmd)),
            "subsets": subsets, "subset_size": size, "seed": seed, "kernel": "poly(d=3, gamma=1/dim, coef0=1)"}


def per_class_fid(real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor,
                  class_names: tuple[str, ...], device: DeviceLike = "cpu") -> dict[str, dict]:
    """FID(generated of class c, real of class c) for every class with generated images.

    With fewer images than feature dimensions Σ is singular and FID is biased upwards: compare only
    numbers with the same n_real/n_fake.
    """
    out = {}
    for c in sorted(set(fake_labels.tolist())):
        r, f = real[real_labels == c], fake[fake_labels == c]
        enough = len(r) >= 2 and len(f) >= 2
        fid = frechet_distance(gaussian_stats(r, device), gaussian_stats(f, device), device) if enough else None
        out[class_names[c]] = {"fid": fid, "n_real": len(r), "n_fake": len(f)}
    return out
