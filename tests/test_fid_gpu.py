"""FID on CUDA (GPU tier: `pytest -m gpu`): the same features as the CPU (TF32 convolutions: within 1%), whatever
the batch size, and the same float64 maths. With the real Inception weights when they are found, else a randomly
initialised FID Inception (the comparison is about the arithmetic, not the weights)."""

import numpy as np
import pytest
import torch

from diffbalance.evaluate.fid import (
    frechet_distance, gaussian_stats, kid, load_inception, precision_recall, resolve_inception_weights,
)
from diffbalance.evaluate.fid import features as F

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _cifar_like(n, seed):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return (torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear") * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path, _ = resolve_inception_weights()
    if path is not None:
        return path
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "random_inception.pth"
    torch.save(F._Pool3Net().state_dict(), path)
    return path


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_cuda_features_agree_with_cpu(weights):
    x = _cifar_like(48, 0)
    cpu = load_inception(weights, "cpu", batch_size=16)(x)
    gpu = load_inception(weights, "cuda", batch_size=256)(x)
    assert gpu.device.type == "cpu" and gpu.dtype == torch.float32 and gpu.shape == cpu.shape
    assert _relative_error(gpu, cpu) < 1e-2  # TF32 convolutions (PyTorch's default for cuDNN) vs fp32
    fid_cpu_vs_gpu = frechet_distance(gaussian_stats(cpu), gaussian_stats(gpu))
    noisy = cpu + 0.05 * cpu.std() * torch.randn(cpu.shape, generator=torch.Generator().manual_seed(0))
    fid_cpu_vs_noisy = frechet_distance(gaussian_stats(cpu), gaussian_stats(noisy))
    assert fid_cpu_vs_gpu < fid_cpu_vs_noisy  # smaller than 5% feature noise would cause


def test_batch_size_does_not_change_cuda_features(weights):
    x = _cifar_like(300, 1)
    big = load_inception(weights, "cuda", batch_size=256)(x)  # one full batch and a short one
    small = load_inception(weights, "cuda", batch_size=7)(x)
    assert _relative_error(small, big) < 1e-2
    torch.testing.assert_close(load_inception(weights, "cuda", batch_size=256)(x), big, rtol=1e-2, atol=1e-2)


def test_float64_maths_on_cuda_equal_the_cpu():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(600, 64, generator=g), torch.randn(500, 64, generator=g) * 1.2 + 0.1
    sa_cpu, sb_cpu = gaussian_stats(a), gaussian_stats(b)
    sa_gpu = gaussian_stats(a, "cuda")
    np.testing.assert_allclose(sa_gpu.sigma, sa_cpu.sigma, rtol=1e-9, atol=1e-12)
    assert frechet_distance(sa_cpu, sb_cpu, "cuda") == pytest.approx(frechet_distance(sa_cpu, sb_cpu), rel=1e-9)
    assert precision_recall(a, b, device="cuda") == precision_recall(a, b)
    k_gpu, k_cpu = kid(a, b, 10, 100, device="cuda"), kid(a, b, 10, 100)
    assert k_gpu["kid_mean"] == pytest.approx(k_cpu["kid_mean"], rel=1e-9)


def test_quality_report_on_cuda_equals_the_cpu():
    from diffbalance.data.imageset import ImageSet
    from diffbalance.evaluate.fid import FidConfig, quality_report

    classes = ("a", "b")
    original = ImageSet(_cifar_like(120, 3), torch.arange(120) % 2, classes, "original")
    fill = ImageSet(_cifar_like(40, 4), torch.zeros(40, dtype=torch.long), classes, "fill")
    cfg = FidConfig(features="random", cache=False, kid_subsets=10, kid_subset_size=30)
    on = {d: quality_report(original, (original.subset(list(range(50))), fill), fill, cfg, d) for d in ("cpu", "cuda")}
    for part in ("protocol_fid", "generated_fid"):
        assert on["cuda"][part]["fid"] == pytest.approx(on["cpu"][part]["fid"], rel=1e-2)
    assert on["cuda"]["device"].startswith("cuda")
