"""CIFAR-10 layouts: torchvision python batches (tiny, written here), the JPEG tree, its tarball, the search order."""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import REPO_ROOT, isolated_data_env, write_cifar_batches  # noqa: F401 (fixture)
from PIL import Image

from diffbalance.data import cifar10 as c10
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import SHARED_ENV


@pytest.fixture
def trust_tiny_batches(monkeypatch):
    """torchvision checks the official md5s; the tiny fixture batches cannot match them."""
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)


def test_python_batches_load_through_torchvision(tmp_path, trust_tiny_batches):
    batches = write_cifar_batches(tmp_path, per_batch=4)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train, test = c10._load_layout(root, cache=False, cache_root=tmp_path / "cache", not_found="")
        assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
        rows = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
        assert torch.equal(train.images, torch.from_numpy(rows.reshape(-1, 3, 32, 32)))  # original order
        assert train.labels.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
        assert train.class_names == c10.CIFAR10_CLASSES and train.meta["lossy"] is False


def test_damaged_batches_are_a_one_line_error(tmp_path):
    write_cifar_batches(tmp_path)  # md5s do not match the official files
    with pytest.raises(DiffbalanceError, match="python batches") as err:
        c10.load_cifar10_batches(tmp_path)
    assert "\n" not in str(err.value)


def write_jpeg_tree(root: Path, n_train: int = 2, n_test: int = 1) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for name in c10.CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in reversed(range(n)):  # written in reverse: order must come from the file names
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.jpg")


def _decoded(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_jpeg_layout_in_class_then_file_name_order(tmp_path):
    write_jpeg_tree(tmp_path / "c")
    train, test = c10.load_cifar10_jpeg(tmp_path / "c", cache=False)
    assert train.images.shape == (20, 3, 32, 32) and test.counts() == [1] * 10
    assert train.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert torch.equal(train.images[0], _decoded(tmp_path / "c/train/airplane/0000.jpg"))
    assert torch.equal(train.images[1], _decoded(tmp_path / "c/train/airplane/0001.jpg"))
    assert torch.equal(train.images[19], _decoded(tmp_path / "c/train/truck/0001.jpg"))


def test_missing_class_folder_is_named(tmp_path):
    write_jpeg_tree(tmp_path)
    for f in (tmp_path / "test" / "ship").iterdir():
        f.unlink()
    with pytest.raises(DiffbalanceError, match="test/ship"):
        c10.load_cifar10_jpeg(tmp_path, cache=False)


def test_tarball_is_unpacked_once(tmp_path, monkeypatch):
    write_jpeg_tree(tmp_path / "tree")
    holder = tmp_path / "holder"
    holder.mkdir()
    with tarfile.open(holder / c10.JPEG_TARBALL, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "train", arcname="train")
        tar.add(tmp_path / "tree" / "test", arcname="test")
    first, _ = c10.load_cifar10(str(holder), download=False, cache=True, cache_root=tmp_path / "cache")
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: pytest.fail("tarball unpacked twice"))
    second, _ = c10.load_cifar10(str(holder), download=False, cache=True, cache_root=tmp_path / "cache")
    assert torch.equal(first.images, second.images) and second.meta["cache"]["hit"]
    assert len(list((tmp_path / "cache" / "cifar10-jpeg").iterdir())) == 1


def test_search_order(tmp_path, monkeypatch, isolated_data_env):
    cwd = Path.cwd()  # tmp/work/cwd: ../shared is tmp/work/shared
    with pytest.raises(DiffbalanceError, match="downloads are off"):
        c10.load_cifar10(None, download=False, cache=False, cache_root=isolated_data_env)
    shared = tmp_path / "elsewhere"
    write_jpeg_tree(shared / "data" / "cifar10-jpeg", n_train=1, n_test=1)
    monkeypatch.setenv(SHARED_ENV, str(shared))
    assert str(shared) in c10.load_cifar10(None, False, False, isolated_data_env)[0].source
    write_jpeg_tree(cwd.parent / "shared" / "data" / "cifar10-jpeg", n_train=2, n_test=1)
    assert len(c10.load_cifar10(None, False, False, isolated_data_env)[0]) == 20  # ../shared comes first
    monkeypatch.setenv(c10.CIFAR10_ENV, str(tmp_path / "empty"))
    with pytest.raises(DiffbalanceError, match=c10.CIFAR10_ENV):
        c10.load_cifar10(None, False, False, isolated_data_env)
    with pytest.raises(DiffbalanceError, match="no CIFAR-10 files"):
        c10.load_cifar10(str(tmp_path), False, False, isolated_data_env)


def _shared_cifar() -> Path | None:
    for path in (Path("/work/shared/data/cifar10-jpeg"), REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg"):
        if (path / c10.JPEG_TARBALL).is_file():
            return path
    return None


@pytest.mark.slow
@pytest.mark.skipif(_shared_cifar() is None, reason="../shared/data/cifar10-jpeg not present")
def test_real_cifar10_jpeg(tmp_path):
    shared = _shared_cifar()
    train, test = c10.load_cifar10(str(shared), download=False, cache=False, cache_root=tmp_path)
    assert train.counts() == [5000] * 10 and test.counts() == [1000] * 10
    # the lossless prefix images, found through the index's jpg_path, must match within JPEG error; the loader
    # groups images by class, so train/<class>/NNNN.jpg is at label·5000 + NNNN (test: label·1000 + NNNN)
    position = {}
    with open(shared / "cifar10_index.csv") as f:
        for row in csv.DictReader(f):
            split, _, name = row["jpg_path"].split("/")
            per_class = 5000 if split == "train" else 1000
            key = (row["batch_file"], int(row["index_in_batch"]))
            position[key] = (split, int(row["label"]) * per_class + int(name[:4]))
    exact = np.load(shared / "cifar10_exact_prefix.npz")
    maes = []
    for img, label, batch, idx in zip(exact["images"], exact["labels"], exact["batch_file"], exact["index_in_batch"]):
        split, pos = position[(str(batch), int(idx))]
        data = train if split == "train" else test
        assert int(data.labels[pos]) == int(label)
        maes.append(np.abs(data.images[pos].permute(1, 2, 0).numpy().astype(int) - img.astype(int)).mean())
    assert len(maes) == 4566 and max(maes) < 13
