"""The real Inception-V3 TorchScript weights from ../shared (slow tier: `pytest -m slow`)."""

from pathlib import Path

import pytest
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.evaluate.fid import FidConfig, fid, load_inception
from diffbalance.evaluate.fid.features import KNOWN_TORCHSCRIPT, KNOWN_TORCHSCRIPT_SHA256

WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fid-inception" / KNOWN_TORCHSCRIPT
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} absent")]


def _cifar_like(n, seed):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return (torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear") * 255).round().to(torch.uint8)


def test_real_weights_shape_checksum_and_determinism():
    ext = load_inception(WEIGHTS, "cpu", batch_size=4)
    assert ext.checksum == KNOWN_TORCHSCRIPT_SHA256
    x = _cifar_like(6, 0)
    a, b = ext(x), ext(x)
    assert a.shape == (6, 2048) and a.dtype == torch.float32 and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(ext(x[:3]), a[:3], rtol=1e-4, atol=1e-4)  # batch size does not change features


def test_real_weights_fid_same_images_is_zero():
    s = ImageSet(_cifar_like(100, 1), torch.zeros(100, dtype=torch.long), ("x",))
    r = fid(s, s, FidConfig(weights_path=str(WEIGHTS), batch_size=50, cache=False), device="cpu")
    assert abs(r["fid"]) < 1e-2 and r["weights_sha256"] == KNOWN_TORCHSCRIPT_SHA256 and r["n_a"] == 100


def test_real_weights_load_once_and_parts_give_the_rebalanced_fid():
    from diffbalance.evaluate.fid import fid_embedder, quality_report

    cfg = FidConfig(weights_path=str(WEIGHTS), batch_size=16, cache=False, kid_subsets=5, kid_subset_size=10)
    emb = fid_embedder(cfg, "cpu")
    assert load_inception(WEIGHTS, "cpu").net is emb.extractor.net  # one network per process and device
    classes = ("x", "y")
    original = ImageSet(_cifar_like(24, 2), torch.arange(24) % 2, classes)
    fill = ImageSet(_cifar_like(12, 3), torch.zeros(12, dtype=torch.long), classes)
    real = original.subset(list(range(12)))
    parts = quality_report(original, (real, fill), fill, cfg, "cpu", embedder=emb)["protocol_fid"]["fid"]
    whole = fid(original, real.concat(fill), cfg, "cpu", embedder=emb)["fid"]
    assert parts == pytest.approx(whole, rel=1e-6) and parts > 0
