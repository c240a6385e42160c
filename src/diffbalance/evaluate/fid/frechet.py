"""Fréchet distance between Gaussians fitted to features — the paper's eq. 11:

    FID = ‖μ_1 − μ_2‖² + Tr(Σ_1 + Σ_2 − 2 (Σ_1 Σ_2)^½)

Statistics are float64. The distance itself is torch-fidelity's `fid_statistics_to_metric` (it works on
precomputed (μ, Σ)): Tr((Σ_1 Σ_2)^½) = Σ_i sqrt(λ_i(Σ_1 Σ_2)), the eigenvalues of the product taken in
complex128 and the real part kept — the same identity torchmetrics' `_compute_fid` uses, and equal to
scipy.linalg.sqrtm's trace without its iterative failure modes on near-singular Σ (tests check it against sqrtm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class GaussianStats:
    """μ (D,) and Σ (D, D) in float64, fitted to n feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def gaussian_stats(features: torch.Tensor | np.ndarray) -> GaussianStats:
    """Mean and unbiased covariance (ddof = 1, as np.cov / pytorch-fid) in float64."""
    f = np.asarray(torch.as_tensor(features).detach().cpu().double().numpy())  # (N, D)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {f.shape}")
    return GaussianStats(f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False)), len(f))


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """Eq. 11 on two fitted Gaussians (float64)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {a.mu.shape} vs {b.mu.shape}")
    stat = lambda s: {"mu": s.mu.astype(np.float64), "sigma": s.sigma.astype(np.float64)}  # noqa: E731
    return float(fid_statistics_to_metric(stat(a), stat(b), verbose=False)["frechet_inception_distance"])
