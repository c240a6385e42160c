"""Fréchet distance, precision/recall and KID on toy features (no network)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from diffbalance.evaluate.fid import frechet_distance, gaussian_stats, kid, per_class_fid, precision_recall


def _feats(n, d, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def _sqrtm_reference(a, b):
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma).real
    return float(((a.mu - b.mu) ** 2).sum() + np.trace(a.sigma + b.sigma - 2 * covmean))


@pytest.mark.parametrize("n,d", [(500, 64), (300, 128)])
def test_frechet_matches_scipy_sqrtm(n, d):
    a, b = gaussian_stats(_feats(n, d, 0)), gaussian_stats(_feats(n, d, 1, 1.3, 0.2))
    ref = _sqrtm_reference(a, b)
    assert abs(frechet_distance(a, b) - ref) <= 1e-3 * abs(ref)


def test_frechet_matches_torchmetrics():
    from torchmetrics.image.fid import _compute_fid

    a, b = gaussian_stats(_feats(400, 32, 2)), gaussian_stats(_feats(400, 32, 3, 0.8))
    t = lambda s: (torch.from_numpy(s.mu), torch.from_numpy(s.sigma))  # noqa: E731
    tm = float(_compute_fid(*t(a), *t(b)))
    assert frechet_distance(a, b) == pytest.approx(tm, rel=1e-6)


def test_identical_stats_give_zero():
    s = gaussian_stats(_feats(500, 64, 4))
    assert abs(frechet_distance(s, s)) < 1e-6


def test_stats_are_float64_and_unbiased():
    f = _feats(50, 8, 5).float()
    s = gaussian_stats(f)
    assert s.mu.dtype == np.float64 and s.sigma.dtype == np.float64 and s.n == 50
    np.testing.assert_allclose(s.sigma, np.cov(f.double().numpy(), rowvar=False), rtol=1e-12)


def test_frechet_grows_with_mean_shift():
    base = gaussian_stats(_feats(400, 16, 6))
    fids = [frechet_distance(base, gaussian_stats(_feats(400, 16, 7, shift=s))) for s in (0.0, 0.5, 1.0)]
    assert fids[0] < fids[1] < fids[2]


def test_precision_recall_identical_and_disjoint():
    x = _feats(300, 8, 8).float()
    same = precision_recall(x, x.clone(), k=3)
    assert same["precision"] == pytest.approx(1.0) and same["recall"] == pytest.approx(1.0)
    far = precision_recall(x, _feats(300, 8, 9, shift=100.0).float(), k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # a generator that covers only half the real manifold: high precision, lower recall
    half = x[x[:, 0] > 0]
    part = precision_recall(x, half, k=3)
    assert part["precision"] == pytest.approx(1.0) and part["recall"] < 0.8


def test_precision_recall_subset_is_seeded():
    x, y = _feats(400, 4, 10).float(), _feats(400, 4, 11).float()
    a = precision_recall(x, y, max_count=100, seed=3)
    assert a == precision_recall(x, y, max_count=100, seed=3) and a["n_real"] == 100


def test_kid_near_zero_for_same_distribution_and_seeded():
    x, y = _feats(600, 16, 12).float(), _feats(600, 16, 13).float()
    same = kid(x, y, subsets=20, subset_size=200, seed=0)
    assert abs(same["kid_mean"]) < 3 * same["kid_std"] + 1e-3
    assert same == kid(x, y, subsets=20, subset_size=200, seed=0)
    far = kid(x, _feats(600, 16, 14, shift=1.0).float(), subsets=20, subset_size=200, seed=0)
    assert far["kid_mean"] > 10 * abs(same["kid_mean"]) and far["kid_mean"] > 0


def test_per_class_fid_only_generated_classes():
    real, fake = _feats(200, 4, 15).float(), _feats(40, 4, 16).float()
    out = per_class_fid(real, torch.arange(200) % 4, fake, torch.tensor([1] * 20 + [3] * 20), ("a", "b", "c", "d"))
    assert set(out) == {"b", "d"} and out["b"]["n_real"] == 50 and out["b"]["n_fake"] == 20
