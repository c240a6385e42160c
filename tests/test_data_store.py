"""The on-disk image store (data.store, data.folder_store): the same pixels, labels, weights and metrics as the
in-memory path; index views instead of copies; a build killed with SIGKILL or stopped by a full disk resumes."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import _fingerprint, train_classifier
from diffbalance.data import folder_store
from diffbalance.data.imageset import ImageSet
from diffbalance.data.sources import DataConfig, load_train_test
from diffbalance.data.store import StoredImages
from diffbalance.data.store_build import open_store, write_store
from diffbalance.infra.atomic import DiskFullError

sys.path.insert(0, str(Path(__file__).parent))
from test_image_sizes import write_folder  # noqa: E402


def random_set(n: int = 60, shape=(3, 10, 12), classes: int = 3, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % classes, tuple("abcdefg"[:classes]), "random")


@pytest.fixture
def stored(tmp_path):
    data = random_set()
    write_store(tmp_path / "store", data, key="k", chunk=7)
    return data, open_store(tmp_path / "store", "k")


def test_every_kind_of_index_reads_the_images_it_names(stored):
    data, s = stored
    x = data.images
    assert isinstance(s.images, StoredImages) and s.stored and s.images.shape == x.shape
    assert torch.equal(s.images[:], x) and torch.equal(s.images[5], x[5]) and torch.equal(s.images[-1], x[-1])
    for key in (slice(3, 40, 4), torch.tensor([9, 2, 2, 50, 0]), [1, 0, 59], np.array([7, 8, 9, 10]),
                data.labels == 1):
        assert torch.equal(s.images[key], x[key])
    with pytest.raises(IndexError):
        s.images[torch.tensor([60])]
    assert np.array_equal(np.asarray(s.images), x.numpy())


def test_subsets_and_joins_are_index_views_read_on_demand(stored, tmp_path):
    data, s = stored
    cut = s.subset([40, 3, 17])
    assert isinstance(cut.images, StoredImages) and torch.equal(cut.images[:], data.images[[40, 3, 17]])
    small = random_set(5, seed=1)
    joined = cut.concat(small)  # a stored cut and an in-memory fill
    assert isinstance(joined.images, StoredImages) and len(joined.images.parts) == 2
    assert torch.equal(joined.images[:], torch.cat([data.images[[40, 3, 17]], small.images]))
    assert torch.equal(joined.labels, torch.cat([data.labels[[40, 3, 17]], small.labels]))
    assert torch.equal(joined.class_images(0), torch.cat([data.images[[3]], small.images[small.labels == 0]]))
    again = pickle.loads(pickle.dumps(joined.images))  # what a DataLoader worker gets: paths and indices
    assert torch.equal(again[:], joined.images[:])
    with pytest.raises(Exception, match="shape"):
        s.concat(random_set(2, shape=(3, 4, 4)))


def test_a_stored_set_trains_the_same_weights_at_any_worker_count(stored, monkeypatch):
    data, s = stored
    assert _fingerprint(s) == _fingerprint(data)  # a checkpoint of one resumes with the other
    config = TrainConfig.from_dict({"model": "small_cnn", "epochs": 2, "batch_size": 16, "lr": 0.05,
                                    "warmup_epochs": 0, "cutout": 4, "head_retrain_epochs": 1})
    memory = train_classifier(data, config, device="cpu", seed=3, progress=False)
    for workers in ("0", "2"):
        monkeypatch.setenv("DIFFBALANCE_LOADER_WORKERS", workers)
        disk = train_classifier(s, config, device="cpu", seed=3, progress=False)
        for (name, a), b in zip(memory.model.state_dict().items(), disk.model.state_dict().values()):
            assert torch.equal(a, b), (workers, name)
        assert torch.equal(disk.predict(s.images), memory.predict(data.images))


def test_fid_statistics_of_a_stored_set_stream_in_chunks(stored, monkeypatch):
    from diffbalance.evaluate.fid import embedder
    from diffbalance.evaluate.fid.features import RandomConvFeatures
    from diffbalance.evaluate.fid.frechet import frechet_distance

    data, s = stored
    monkeypatch.setattr(embedder, "STREAM_CHUNK", 8)  # 60 images: 7 chunks, the last of 4
    extractor = RandomConvFeatures(device=torch.device("cpu"), batch_size=16)
    memory, disk = embedder.Embedder(extractor)(data.images), embedder.Embedder(extractor)(s.images)
    assert disk.stats.n == memory.stats.n == 60
    np.testing.assert_allclose(disk.stats.mu, memory.stats.mu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(disk.stats.sigma, memory.stats.sigma, rtol=0, atol=1e-12)
    other = embedder.Embedder(extractor)(random_set(30, seed=2).images)
    # Σ agree to 1e-12; the matrix square root of these rank-deficient Σ (fewer images than features) magnifies
    # that to ~1e-8 of the FID: the tolerance stated is 1e-6
    assert frechet_distance(disk.stats, other.stats) == pytest.approx(frechet_distance(memory.stats, other.stats),
                                                                      rel=1e-6)


def test_the_quality_report_of_stored_sets_holds_no_feature_matrix(tmp_path, monkeypatch):
    """Stored sets: per-class FID, precision/recall and KID from a class-by-class pass that keeps only the rows
    their seeded subsets draw — the same P/R and KID as in memory, FIDs to the float64 rounding of combined Σ.
    Subsets smaller than the sets (P/R 20 of 61 real rows, KID 4 subsets of 8), a real class of one image, a
    generated class of one image, chunks of 8 (one of 1 joins its neighbour)."""
    from diffbalance.evaluate.fid import embedder
    from diffbalance.evaluate.fid.features import RandomConvFeatures
    from diffbalance.evaluate.fid.protocol import FidConfig, quality_report

    def labelled(counts: list[int], seed: int) -> ImageSet:
        labels = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
        images = random_set(len(labels), seed=seed).images
        return ImageSet(images, labels, tuple("abcd"), "random")

    original = labelled([30, 30, 30, 1], seed=1)  # class d: one real image
    generated = labelled([0, 22, 7, 1], seed=2)  # class d: one generated image
    real = labelled([10, 10, 10, 10], seed=3)  # the imbalanced real part of the rebalanced set
    on_disk = []
    for name, s in (("o", original), ("g", generated), ("r", real)):
        write_store(tmp_path / name, s, key=name, chunk=9)
        on_disk.append(open_store(tmp_path / name, name))
    cfg = FidConfig(features="random", max_images_pr=20, pr_k=3, kid_subsets=4, kid_subset_size=8, seed=5)
    extractor = RandomConvFeatures(device=torch.device("cpu"), batch_size=16)
    memory = quality_report(original, (real, generated), generated, cfg, "cpu", extractor=extractor)
    monkeypatch.setattr(embedder, "STREAM_CHUNK", 8)
    monkeypatch.setattr(embedder.Embedder, "features", lambda *a: pytest.fail("a whole set's feature rows"))
    o, g, r = on_disk
    disk = quality_report(o, (r, g), g, cfg, "cpu", extractor=extractor)
    # the same rows, embedded in other batches: features agree to float32 rounding (sharded.py), so P/R may move
    # by one row at a radius's edge (1/20) and KID, a cubic kernel of them, by ~1e-6 of itself
    pr_disk, pr_memory = disk["precision_recall"], memory["precision_recall"]
    assert {k: v for k, v in pr_disk.items() if k not in ("precision", "recall")} == \
        {k: v for k, v in pr_memory.items() if k not in ("precision", "recall")}
    assert pr_disk["n_real"] == pr_disk["n_fake"] == 20
    for key in ("precision", "recall"):
        assert abs(pr_disk[key] - pr_memory[key]) <= 1 / 20 + 1e-12
    assert disk["kid"]["subsets"] == 4 and disk["kid"]["subset_size"] == memory["kid"]["subset_size"] == 8
    assert disk["kid"]["kid_mean"] == pytest.approx(memory["kid"]["kid_mean"], rel=1e-5)
    assert disk["kid"]["kid_std"] == pytest.approx(memory["kid"]["kid_std"], rel=1e-5)
    assert disk["per_class_fid"].keys() == memory["per_class_fid"].keys() == {"b", "c", "d"}
    assert disk["per_class_fid"]["d"] == memory["per_class_fid"]["d"] == {"fid": None, "n_real": 1, "n_fake": 1}
    for key in ("b", "c"):  # Σ of fewer images than features: the tolerance of the FID test above
        a, b = disk["per_class_fid"][key], memory["per_class_fid"][key]
        assert a["fid"] == pytest.approx(b["fid"], rel=1e-6) and (a["n_real"], a["n_fake"]) == (b["n_real"], b["n_fake"])
    for key in ("protocol_fid", "generated_fid"):
        assert disk[key]["fid"] == pytest.approx(memory[key]["fid"], rel=1e-6)
        assert {k: v for k, v in disk[key].items() if k != "fid"} == {k: v for k, v in memory[key].items() if k != "fid"}


def _folder_sets(root: Path, monkeypatch, mode: str, **options) -> tuple[ImageSet, ImageSet]:
    monkeypatch.setenv("DIFFBALANCE_STORE", mode)
    return load_train_test(DataConfig(name="folder", root=str(root), **options))


def test_a_folder_read_into_a_store_gives_the_in_memory_pixels(tmp_path, monkeypatch, capsys):
    """Mixed sizes (one note, the median side) and an unreadable file (skipped, counted), split 80/20."""
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "f", {"a": 14, "b": 9, "c": 6}, size=(20, 16), vary=1)
    (root / "b" / "zz.png").write_bytes(b"not a png")
    memory = _folder_sets(root, monkeypatch, "memory")
    disk = _folder_sets(root, monkeypatch, "disk")
    for m, d in zip(memory, disk):
        assert d.stored and not m.stored
        assert torch.equal(d.images[:], m.images) and torch.equal(d.labels, m.labels)
        assert d.class_names == m.class_names and d.meta["unreadable_count"] == m.meta["unreadable_count"] == 1
    err = capsys.readouterr().err
    assert "kept on disk in an image store" in err and "resized to" in err
    reopened = _folder_sets(root, monkeypatch, "disk")[0]  # the store is the cache: read, not decoded again
    assert reopened.stored and torch.equal(reopened.images[:], memory[0].images)


def test_a_store_build_killed_with_sigkill_resumes_where_it_stopped(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "f", {"a": 23, "b": 17}, size=(12, 12))
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os, signal
        from diffbalance.data import folder_store, image_folder
        folder_store.CHUNK = 8
        calls = []
        real = folder_store.decode_images
        def decode(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:  # two chunks written: die before the third
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        folder_store.decode_images = decode
        from diffbalance.data.sources import DataConfig, load_train_test
        load_train_test(DataConfig(name="folder", root={str(root)!r}, test_root={str(root)!r}))
    """)
    env = {**os.environ, "DIFFBALANCE_CACHE": str(cache), "DIFFBALANCE_STORE": "disk"}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    (progress,) = cache.glob("stores/*/progress.json")
    assert json.loads(progress.read_text())["done"] == 16
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(cache))
    decoded = []
    real = folder_store.decode_images
    monkeypatch.setattr(folder_store, "decode_images",
                        lambda paths, *a, **k: decoded.append(len(paths)) or real(paths, *a, **k))
    monkeypatch.setattr(folder_store, "CHUNK", 8)
    disk = _folder_sets(root, monkeypatch, "disk", test_root=str(root))
    assert decoded == [8, 8, 8] + [8] * 5  # train resumed at file 16 of 40 (24 left), then the test store: 40
    memory = _folder_sets(root, monkeypatch, "memory", test_root=str(root))
    assert torch.equal(disk[0].images[:], memory[0].images) and torch.equal(disk[0].labels, memory[0].labels)


def test_a_full_disk_is_one_line_before_decoding_and_the_build_resumes(tmp_path, monkeypatch):
    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    data = random_set()
    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(DiskFullError, match="images.npy") as err:
        write_store(tmp_path / "s", data, key="k")
    assert "\n" not in str(err.value) and not (tmp_path / "s" / "store.json").exists()
    monkeypatch.undo()
    write_store(tmp_path / "s", data, key="k")
    assert torch.equal(open_store(tmp_path / "s", "k").images[:], data.images)


def test_a_run_on_a_stored_folder_gives_the_same_fills_and_metrics(tmp_path, monkeypatch):
    """The identity check: one config run with the folder in memory and on disk — every fill PNG the same bytes,
    every run's metrics the same."""
    from diffbalance.cli.main import main

    root = write_folder(tmp_path / "f", {"a": 24, "b": 10, "c": 5}, size=(16, 16))
    config = {"name": "store", "data": {"name": "folder", "root": str(root), "test_fraction": 0.25},
              "methods": ["oversample", "cutmix", {"name": "bs", "rebalancer": "none",
                                                   "train": {"loss": "balanced_softmax"}}],
              "seeds": [0, 1], "train": {"epochs": 1, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0},
              "reference_train": {"epochs": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    runs = {}
    for mode in ("memory", "disk"):
        monkeypatch.setenv("DIFFBALANCE_STORE", mode)
        monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / f"cache-{mode}"))
        main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / mode), "--quiet", "--device", "cpu"])
        runs[mode] = json.loads((tmp_path / mode / "results.json").read_text())["runs"]
    pngs = sorted(p.relative_to(tmp_path / "memory") for p in (tmp_path / "memory" / "fills").rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(tmp_path / "disk") for p in (tmp_path / "disk" / "fills").rglob("*.png"))
    for rel in pngs:
        assert (tmp_path / "memory" / rel).read_bytes() == (tmp_path / "disk" / rel).read_bytes(), rel
    metrics = ("accuracy", "balanced_accuracy", "macro_f1", "per_class_f1")
    for a, b in zip(runs["memory"], runs["disk"]):
        assert (a["method"], a["seed"]) == (b["method"], b["seed"])
        assert {k: a.get(k) for k in metrics} == {k: b.get(k) for k in metrics}, a["method"]


def test_a_store_larger_than_the_free_space_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))  # 1 MiB free
    with pytest.raises(DiskFullError, match="not enough room") as err:
        write_store(tmp_path / "s", random_set(), key="k")
    assert "\n" not in str(err.value) and not (tmp_path / "s" / "images.npy").exists()


def test_a_decompression_bomb_header_does_not_size_the_set(tmp_path, monkeypatch):
    """The first file claims more pixels than PIL allows: it is unreadable, so the next file sizes the folder and
    the set stays in memory, the bomb skipped as the in-memory reader skips it."""
    from PIL import Image

    root = write_folder(tmp_path / "f", {"a": 4, "b": 3}, size=(8, 8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 8×8 = 64 fits; the 20×20 "bomb" does not
    Image.new("RGB", (20, 20)).save(root / "a" / "00000-bomb.png")
    assert folder_store._header(root / "a" / "00000-bomb.png") is None
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFBALANCE_STORE", "auto")
    monkeypatch.setenv("DIFFBALANCE_STORE_ABOVE", str(20 * 20 * 3 * 8 - 1))  # 8 files sized by the bomb: on disk
    from diffbalance.data.image_folder import load_image_folder

    data = load_image_folder(root)
    assert not data.stored and len(data) == 7 and data.meta["unreadable_count"] == 1
