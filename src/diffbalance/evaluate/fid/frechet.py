"""Fréchet distance between Gaussians fitted to features — the paper's eq. 11:

    FID = ‖μ_1 − μ_2‖² + Tr(Σ_1 + Σ_2 − 2 (Σ_1 Σ_2)^½)

Statistics are float64. Tr((Σ_1 Σ_2)^½) = Σ_i sqrt(λ_i(Σ_1 Σ_2)), and Σ_1 Σ_2 has the eigenvalues of the
symmetric PSD matrix M = Σ_1^½ Σ_2 Σ_1^½ (similar matrices), so two symmetric eigendecompositions (`eigh` of Σ_1,
`eigvalsh` of M) give the trace: no complex eigenvalues, no iterative sqrtm, and it runs on the device. It equals
scipy.linalg.sqrtm's trace (tests check it, and against torchmetrics' `_compute_fid`).

Statistics of a set made of parts (a rebalanced set = its real images + the fill) are combined from the parts'
statistics (`combine_stats`, Chan et al. 1979's pairwise update), so no image is embedded twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffbalance.infra.device import DeviceLike, resolve_device

STATS_CHUNK_ROWS = 8192  # rows per covariance update on the device (bounds memory: 8192 × D float64)


@dataclass(frozen=True, eq=False)
class GaussianStats:
    """μ (D,) and Σ (D, D) in float64, fitted to n feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def gaussian_stats(features: torch.Tensor | np.ndarray, device: DeviceLike = "cpu") -> GaussianStats:
    """Mean and unbiased covariance (ddof = 1, as np.cov / pytorch-fid) in float64; on a CUDA `device` as
    chunked float64 matmuls, on the CPU with np.cov itself."""
    f = torch.as_tensor(features).detach()
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {tuple(f.shape)}")
    device = resolve_device(device)  # "auto" too
    if device.type == "cpu":
        x = f.cpu().double().numpy()  # (N, D)
        return GaussianStats(x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)), len(x))
    return _stats_on(f, device)


def _stats_on(f: torch.Tensor, device: torch.device) -> GaussianStats:
    """μ and Σ (ddof = 1) as float64 matmuls on `device`, STATS_CHUNK_ROWS rows at a time."""
    mu = torch.zeros(f.shape[1], dtype=torch.float64, device=device)
    for i in range(0, len(f), STATS_CHUNK_ROWS):
        mu += f[i : i + STATS_CHUNK_ROWS].to(device, torch.float64).sum(dim=0)
    mu /= len(f)
    sigma = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=device)
    for i in range(0, len(f), STATS_CHUNK_ROWS):
        c = f[i : i + STATS_CHUNK_ROWS].to(device, torch.float64) - mu  # (B, D) centred
        sigma.addmm_(c.T, c)
    sigma /= len(f) - 1
    return GaussianStats(mu.cpu().numpy(), sigma.cpu().numpy(), len(f))


def combine_stats(*parts: GaussianStats) -> GaussianStats:
    """The statistics of the union of the parts' feature sets, exactly (float64): n = Σ n_i, μ = Σ n_i μ_i / n,
    scatter S = Σ [(n_i − 1) Σ_i + n_i (μ_i − μ)(μ_i − μ)ᵀ], Σ = S / (n − 1)."""
    if not parts:
        raise ValueError("combine_stats needs at least one part")
    if len(parts) == 1:
        return parts[0]
    n = sum(p.n for p in parts)
    mu = sum(p.n * p.mu for p in parts) / n
    scatter = sum((p.n - 1) * p.sigma + p.n * np.outer(p.mu - mu, p.mu - mu) for p in parts)
    return GaussianStats(mu, scatter / (n - 1), n)


def trace_sqrt_product(sigma_1: torch.Tensor, sigma_2: torch.Tensor) -> float:
    """Tr((Σ_1 Σ_2)^½) = Σ_i sqrt(λ_i(Σ_1^½ Σ_2 Σ_1^½)) for symmetric PSD Σ (float64, on their device)."""
    w, v = torch.linalg.eigh(sigma_1)  # Σ_1 = V diag(w) Vᵀ
    root_1 = (v * w.clamp(min=0).sqrt()) @ v.T  # Σ_1^½
    m = root_1 @ sigma_2 @ root_1
    lam = torch.linalg.eigvalsh((m + m.T) / 2)  # symmetrised against rounding; PSD up to rounding
    return float(lam.clamp(min=0).sqrt().sum())


def frechet_distance(a: GaussianStats, b: GaussianStats, device: DeviceLike = "cpu") -> float:
    """Eq. 11 on two fitted Gaussians (float64, on `device`: the CPU by default)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {a.mu.shape} vs {b.mu.shape}")
    device = resolve_device(device)  # "auto" too
    t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)  # noqa: E731
    mu_1, mu_2, sigma_1, sigma_2 = t(a.mu), t(b.mu), t(a.sigma), t(b.sigma)
    diff = mu_1 - mu_2
    tr_covmean = trace_sqrt_product(sigma_1, sigma_2)
    return float(diff @ diff + torch.trace(sigma_1) + torch.trace(sigma_2)) - 2 * tr_covmean
