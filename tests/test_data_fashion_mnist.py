"""Fashion-MNIST IDX parsing (tiny files written here) and the search order; the real set when installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import idx_bytes, isolated_data_env, write_fashion_idx  # noqa: F401 (fixture)

from diffbalance.data import fashion_mnist as fm
from diffbalance.infra.errors import DiffbalanceError


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_gz_and_plain(tmp_path, gz):
    arrays = write_fashion_idx(tmp_path, n_train=20, n_test=10, gz=gz)
    train, test = fm.load_fashion_mnist(tmp_path)
    assert train.images.shape == (20, 1, 28, 28) and test.images.shape == (10, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert train.labels.tolist() == arrays["train"][1].tolist()
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"


def test_truncated_gzip_is_a_one_line_error(tmp_path):
    write_fashion_idx(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DiffbalanceError, match="train-images") as err:
        fm.load_fashion_mnist(tmp_path)
    assert "\n" not in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


def test_wrong_magic_and_wrong_size_are_rejected(tmp_path):
    bad_magic = bytearray(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    bad_magic[3] = 1  # claims 1 dimension
    (tmp_path / "a").write_bytes(bytes(bad_magic))
    with pytest.raises(DiffbalanceError, match="magic number"):
        fm.read_idx(tmp_path / "a", 3)
    (tmp_path / "b").write_bytes(idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-5])
    with pytest.raises(DiffbalanceError, match="header"):
        fm.read_idx(tmp_path / "b", 3)
    (tmp_path / "c.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DiffbalanceError, match="cannot read"):
        fm.read_idx(tmp_path / "c.gz", 1)


def test_image_and_label_counts_must_agree(tmp_path):
    write_fashion_idx(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DiffbalanceError, match="3 labels"):
        fm.load_fashion_mnist(tmp_path)


def test_search_order_env_var_then_system_dir(tmp_path, monkeypatch, isolated_data_env):
    env_dir, sys_dir = tmp_path / "env", tmp_path / "sys"
    write_fashion_idx(env_dir)
    write_fashion_idx(sys_dir)
    monkeypatch.setattr(fm, "SYSTEM_DIR", sys_dir)
    assert fm.resolve_fashion_mnist(None, False, isolated_data_env) == sys_dir
    monkeypatch.setenv(fm.FASHION_MNIST_ENV, str(env_dir))
    assert fm.resolve_fashion_mnist(None, False, isolated_data_env) == env_dir
    monkeypatch.setenv(fm.FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DiffbalanceError, match=fm.FASHION_MNIST_ENV):
        fm.resolve_fashion_mnist(None, False, isolated_data_env)


def test_not_found_without_download_names_the_fix(tmp_path, monkeypatch, isolated_data_env):
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "absent")
    with pytest.raises(DiffbalanceError, match="apt-get install dataset-fashion-mnist") as err:
        fm.resolve_fashion_mnist(None, False, isolated_data_env)
    assert fm.FASHION_MNIST_ENV in str(err.value)
    with pytest.raises(DiffbalanceError, match="no Fashion-MNIST IDX files"):
        fm.resolve_fashion_mnist(str(tmp_path), False, isolated_data_env)


SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not fm.has_fashion_mnist(SYSTEM_FASHION), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_train_set():
    train = fm.load_split(SYSTEM_FASHION, "train")
    assert train.images.shape == (60000, 1, 28, 28)
    assert train.counts() == [6000] * 10
