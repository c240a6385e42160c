"""Sharded FID: two CPU processes (gloo, as torchrun would start them) give the features, statistics and scores
of one process, and rank 0 alone writes the feature cache (fast tier, tiny random extractor)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dist_helpers import free_port, join_gloo
from diffbalance.data.imageset import ImageSet
from diffbalance.data.store_build import open_store, write_store
from diffbalance.evaluate.fid import Embedder, FeatureCache, FidConfig, RandomConvFeatures, quality_report
from diffbalance.evaluate.fid.sharded import extract_features

CLASSES = ("a", "b", "c", "d")
CFG = FidConfig(features="random", cache=False, kid_subsets=10, kid_subset_size=20, batch_size=5)
WORLD = 2


def _images(n, seed, size=16):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear") * 255).round().to(torch.uint8)


def _sets():
    """original (60), the imbalanced real part (its first 23) and a fill (21) — odd sizes: uneven rank blocks."""
    original = ImageSet(_images(60, 0), torch.arange(60) % 4, CLASSES, "original")
    real = original.subset(list(range(23)))
    fill = ImageSet(_images(21, 1), torch.tensor([0, 2] * 10 + [0]), CLASSES, "fill")
    return original, real, fill


class CountingCache(FeatureCache):
    """Records every write in a per-rank file."""

    def put(self, key, emb, meta):
        rank = os.environ.get("RANK", "0")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f"puts-rank{rank}.txt", "a") as f:
            f.write(key + "\n")
        super().put(key, emb, meta)


def _measure(out: Path) -> dict:
    """What both the 2-process job and the single process compute."""
    original, real, fill = _sets()
    ext = RandomConvFeatures(batch_size=4)
    emb = Embedder(ext, CountingCache(out / "cache"))
    first = emb(original.images, need_features=True)
    again = Embedder(ext, CountingCache(out / "cache"))(original.images, need_features=True)  # from the disk
    report = quality_report(original, (real, fill), fill, CFG, "cpu")
    stored = []  # the same sets kept on disk (data.store): the report's class-by-class pass (fid/streamed.py)
    for name, s in (("original", original), ("real", real), ("fill", fill)):
        folder = out / f"stores-rank{os.environ.get('RANK', '0')}" / name
        write_store(folder, s, key=name, chunk=8)
        stored.append(open_store(folder, name))
    report_stored = quality_report(stored[0], (stored[1], stored[2]), stored[2], CFG, "cpu")
    return {
        "features": first.features, "mu": first.stats.mu, "sigma": first.stats.sigma,
        "again_hit": again.cache_hit, "again_features": again.features,
        "one_image": extract_features(fill.images[:1], ext),  # fewer images than ranks: one rank embeds nothing
        "report": report, "report_stored": report_stored,
    }


def _worker(rank: int, port: int, out: str) -> None:
    from diffbalance.infra import distributed

    assert join_gloo(rank, WORLD, port) == torch.device("cpu") and distributed.current().world_size == WORLD
    result = _measure(Path(out) / "dist")
    torch.save(result, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    single = _measure(out / "single")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return out, single, ranks


def test_features_and_statistics_equal_one_process(runs):
    _, single, ranks = runs
    for r in ranks:
        torch.testing.assert_close(r["features"], single["features"], rtol=1e-5, atol=1e-6)  # original order
        np.testing.assert_allclose(r["mu"], single["mu"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(r["sigma"], single["sigma"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(r["one_image"], single["one_image"], rtol=1e-5, atol=1e-6)
    assert ranks[0]["features"].shape == (60, 32) and ranks[0]["one_image"].shape == (1, 32)


@pytest.mark.parametrize("report", ["report", "report_stored"])
def test_scores_equal_one_process(runs, report):
    """In memory and with the sets on disk (each rank embeds its block of every class's chunks)."""
    _, single, ranks = runs
    s = single[report]
    for r in (x[report] for x in ranks):
        for part in ("protocol_fid", "generated_fid"):
            assert r[part]["fid"] == pytest.approx(s[part]["fid"], rel=1e-5, abs=1e-7)
            assert r[part]["n_b"] == s[part]["n_b"]
        assert r["protocol_fid"]["n_b"] == 44  # 23 real + 21 generated, given as parts
        assert r["precision_recall"] == s["precision_recall"]
        assert r["kid"]["kid_mean"] == pytest.approx(s["kid"]["kid_mean"], rel=1e-4, abs=1e-9)
        assert r["per_class_fid"].keys() == s["per_class_fid"].keys()
        assert r["processes"] == WORLD and "processes" not in s


def test_rank_0_alone_writes_the_cache_and_every_rank_reads_it(runs):
    out, _, ranks = runs
    assert len((out / "dist" / "puts-rank0.txt").read_text().splitlines()) == 1
    assert not (out / "dist" / "puts-rank1.txt").exists()
    assert len(list((out / "dist" / "cache").glob("*.safetensors"))) == 1
    for r in ranks:
        assert r["again_hit"]
        torch.testing.assert_close(r["again_features"], r["features"])
