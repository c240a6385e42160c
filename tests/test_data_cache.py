"""The decoded-set cache: hits return identical tensors without decoding; damaged entries are rebuilt."""

from __future__ import annotations

import os

import pytest
import torch
from fixtures_data import isolated_data_env, write_image_tree  # noqa: F401 (fixture)

from diffbalance.data.cache import cache_key, cached_sets
from diffbalance.data.imageset import ImageSet
from diffbalance.data.sources import DataConfig, load_train_test


def _sets() -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 2, 2), dtype=torch.uint8, generator=g)
    a = ImageSet(images, torch.tensor([0, 1, 1, 0]), ("p", "q"), "a", {"n": 1})
    b = ImageSet(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.tensor([1]), ("p", "q"), "b")
    return a, b


def test_hit_returns_identical_tensors_without_building(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return _sets()

    first = cached_sets("k1", build, root=tmp_path)
    second = cached_sets("k1", build, root=tmp_path)
    assert len(calls) == 1 and not first[0].meta["cache"]["hit"] and second[0].meta["cache"]["hit"]
    for x, y in zip(first, second):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
        assert x.class_names == y.class_names and x.source == y.source
    assert second[0].meta["n"] == 1


def test_damaged_entry_is_rebuilt(tmp_path):
    cached_sets("k2", _sets, root=tmp_path)
    (tmp_path / "sets" / "k2" / "sets.safetensors").write_bytes(b"garbage")
    again = cached_sets("k2", _sets, root=tmp_path)
    assert not again[0].meta["cache"]["hit"]
    assert cached_sets("k2", _sets, root=tmp_path)[0].meta["cache"]["hit"]


def test_key_follows_files_and_options(tmp_path):
    write_image_tree(tmp_path / "d", {"a": 2}, size=(4, 4))
    key = cache_key("folder", [tmp_path / "d", None], {"image_size": 4})
    assert key == cache_key("folder", [tmp_path / "d", None], {"image_size": 4})
    assert key != cache_key("folder", [tmp_path / "d", None], {"image_size": 8})
    assert key != cache_key("other", [tmp_path / "d", None], {"image_size": 4})
    path = tmp_path / "d" / "a" / "img_00.png"
    os.utime(path, ns=(0, 12345))
    assert key != cache_key("folder", [tmp_path / "d", None], {"image_size": 4})


def test_folder_dataset_is_decoded_once(tmp_path, isolated_data_env, monkeypatch):
    write_image_tree(tmp_path / "d", {"a": 5, "b": 5}, size=(6, 6))
    config = DataConfig(name="folder", root=str(tmp_path / "d"), image_size=6, test_fraction=0.4)
    train, test = load_train_test(config)
    monkeypatch.setattr("diffbalance.data.image_folder.read_image", lambda *a: pytest.fail("decoded again"))
    train2, test2 = load_train_test(config)
    assert train2.meta["cache"]["hit"] and torch.equal(train.images, train2.images)
    assert torch.equal(test.labels, test2.labels)
    assert (isolated_data_env / "sets").is_dir()
