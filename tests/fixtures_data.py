"""Tiny data fixtures written by the tests themselves (IDX files, CIFAR python batches, image folders)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA_ENV_VARS = ("DIFFBALANCE_FASHION_MNIST", "DIFFBALANCE_CIFAR10", "DIFFBALANCE_SHARED")
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def isolated_data_env(tmp_path, monkeypatch) -> Path:
    """No dataset env vars, the cache in a temp folder, the current folder without ../shared; returns the cache."""
    for name in DATA_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(cache))
    work = tmp_path / "work" / "cwd"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return cache


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000_08_ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_idx(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True, seed: int = 0) -> dict:
    """The four Fashion-MNIST IDX files with random 28×28 images and labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar_batches(root: Path, per_batch: int = 4, seed: int = 0) -> dict:
    """A tiny `cifar-10-batches-py` in the official format (pickled dicts), written here as a fixture."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    out = {}
    for k, name in enumerate(names):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = [int(v) for v in (np.arange(per_batch) + k) % 10]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
        out[name] = (data, labels)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return out


def write_image_tree(
    root: Path, per_class: dict[str, int], size: tuple[int, int] = (12, 10), ext: str = ".png", seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """root/<class>/img_NN<ext> with random RGB images; returns the arrays per class in file-name order."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, list[np.ndarray]] = {}
    for name, n in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        arrays[name] = []
        for i in range(n):
            a = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
            Image.fromarray(a).save(root / name / f"img_{i:02d}{ext}")
            arrays[name].append(a)
    return arrays
