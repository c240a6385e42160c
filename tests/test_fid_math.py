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


# --- the device-side maths: same numbers as the references -------------------------------------------------------


def test_frechet_matches_sqrtm_on_a_larger_dimension():
    a, b = gaussian_stats(_feats(500, 160, 20)), gaussian_stats(_feats(500, 160, 21, 0.7, -0.1))
    ref = _sqrtm_reference(a, b)
    assert abs(frechet_distance(a, b) - ref) <= 1e-6 * abs(ref)


def test_trace_sqrt_product_on_singular_covariances_matches_eigvals():
    """n < D (Σ singular, per-class FID): eigh of Σ_1 then eigvalsh of Σ_1^½ Σ_2 Σ_1^½ equals the trace from the
    complex eigenvalues of Σ_1 Σ_2 (torch-fidelity's formula, what this module used before)."""
    from diffbalance.evaluate.fid.frechet import trace_sqrt_product

    a, b = gaussian_stats(_feats(40, 96, 22)), gaussian_stats(_feats(30, 96, 23, 1.5))
    ref = np.sum(np.sqrt(np.linalg.eigvals(a.sigma @ b.sigma).astype("complex128")).real)
    got = trace_sqrt_product(torch.from_numpy(a.sigma), torch.from_numpy(b.sigma))
    assert got == pytest.approx(ref, rel=1e-7)  # the zero eigenvalues' rounding noise, square-rooted, is ~1e-6


def test_stats_as_chunked_matmuls_equal_np_cov(monkeypatch):
    from diffbalance.evaluate.fid import frechet

    monkeypatch.setattr(frechet, "STATS_CHUNK_ROWS", 7)  # several chunks, the last one short
    f = _feats(50, 8, 24).float()
    got, ref = frechet._stats_on(f, torch.device("cpu")), gaussian_stats(f)
    np.testing.assert_allclose(got.mu, ref.mu, rtol=1e-12)
    np.testing.assert_allclose(got.sigma, ref.sigma, rtol=1e-10, atol=1e-14)
    assert got.n == ref.n == 50


def test_combined_stats_equal_stats_of_the_union():
    from diffbalance.evaluate.fid import combine_stats

    parts = [_feats(n, 6, 30 + n, scale=1 + n / 50, shift=n / 10) for n in (2, 17, 64)]
    got, ref = combine_stats(*map(gaussian_stats, parts)), gaussian_stats(torch.cat(parts))
    np.testing.assert_allclose(got.mu, ref.mu, rtol=1e-12)
    np.testing.assert_allclose(got.sigma, ref.sigma, rtol=1e-10, atol=1e-14)
    assert got.n == 83


def test_kid_equals_torch_fidelity_in_blocks(monkeypatch):
    from torch_fidelity.metric_kid import kid_features_to_metric

    from diffbalance.evaluate.fid import extra

    x, y = _feats(300, 16, 25).float(), _feats(250, 16, 26, shift=0.3).float()
    ref = kid_features_to_metric(x.double(), y.double(), kid_subsets=9, kid_subset_size=40, rng_seed=5,
                                 verbose=False, kid_kernel="poly", kid_kernel_poly_degree=3,
                                 kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    monkeypatch.setattr(extra, "CHUNK_BYTES", 8 * (3 * 40 * 40 + 2 * 40 * 16) * 4)  # blocks of 4 subsets
    got = kid(x, y, subsets=9, subset_size=40, seed=5)
    assert got["kid_mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)
    assert got["kid_std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-9)


def test_precision_recall_does_not_depend_on_the_block_size():
    x, y = _feats(200, 8, 27).float(), _feats(150, 8, 28, shift=0.4).float()
    whole = precision_recall(x, y, k=3)
    assert whole == precision_recall(x, y, k=3, batch_rows=7)
    assert 0 < whole["precision"] < 1 and 0 < whole["recall"] < 1
