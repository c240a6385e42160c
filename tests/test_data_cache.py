"""The decoded-set cache: hits return identical tensors without decoding; damaged entries are rebuilt; one cache
location (diffbalance.infra.paths, one environment variable) for the data sets and the FID statistics."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
from fixtures_data import REPO_ROOT, isolated_data_env, write_image_tree  # noqa: F401 (fixture)

from diffbalance.infra import paths
from diffbalance.data import cache as data_cache
from diffbalance.data.cache import cache_key, cached_sets
from diffbalance.data.imageset import ImageSet
from diffbalance.evaluate.fid.cache import FeatureCache


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
    from diffbalance.data.sources import DataConfig, load_train_test

    write_image_tree(tmp_path / "d", {"a": 5, "b": 5}, size=(6, 6))
    config = DataConfig(name="folder", root=str(tmp_path / "d"), image_size=6, test_fraction=0.4)
    train, test = load_train_test(config)
    monkeypatch.setattr("diffbalance.data.image_folder.read_image", lambda *a: pytest.fail("decoded again"))
    train2, test2 = load_train_test(config)
    assert train2.meta["cache"]["hit"] and torch.equal(train.images, train2.images)
    assert torch.equal(test.labels, test2.labels)
    assert (isolated_data_env / "sets").is_dir()


def test_one_env_var_places_both_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "c"))
    cached_sets("k3", _sets)  # no root: the one cache location
    assert (tmp_path / "c" / "sets" / "k3" / "sets.safetensors").is_file()
    assert FeatureCache().root == tmp_path / "c" / "fid"
    assert data_cache.cache_dir is paths.cache_dir and data_cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DIFFBALANCE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert FeatureCache().root == tmp_path / "home" / ".cache" / "diffbalance" / "fid"
    assert paths.cache_dir("sets") == tmp_path / "home" / ".cache" / "diffbalance" / "sets"


@pytest.mark.parametrize("variable", ["DIFFBALANCE_CACHE", "DIFFBALANCE_SHARED"])
def test_only_paths_names_the_cache_and_shared_env_vars(variable):
    """No second definition of the cache location or of the shared-files search: each variable's name appears in
    code only in infra/paths.py."""
    src = REPO_ROOT / "src" / "diffbalance"

    def names_it(f: Path) -> bool:
        nodes = ast.walk(ast.parse(f.read_text()))
        return any(isinstance(n, ast.Constant) and n.value == variable for n in nodes)

    naming = [f.relative_to(src).as_posix() for f in sorted(src.rglob("*.py")) if names_it(f)]
    assert naming == ["infra/paths.py"]


def test_shared_files_are_searched_in_one_place(tmp_path, isolated_data_env, monkeypatch):
    """../shared from the current folder first, then $DIFFBALANCE_SHARED (the order both searches always had);
    CIFAR-10 and the Inception weights both look there through infra.paths.shared_paths."""
    from diffbalance.data.cifar10 import search_paths
    from diffbalance.evaluate.fid.features import KNOWN_TORCHSCRIPT, WEIGHTS_ENV, resolve_inception_weights

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    beside = Path.cwd().parent / "shared"  # tmp/work/shared, beside the current folder tmp/work/cwd
    assert paths.shared_paths("data", "x") == [beside / "data" / "x"]
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path / "elsewhere"))
    assert paths.shared_paths("data", "x") == [beside / "data" / "x", tmp_path / "elsewhere" / "data" / "x"]
    assert search_paths() == paths.shared_paths("data", "cifar10-jpeg")
    assert resolve_inception_weights() == (None, False)  # neither holds the weights: the online path
    for root in (tmp_path / "elsewhere", beside):
        (root / "data" / "fid-inception").mkdir(parents=True)
        (root / "data" / "fid-inception" / KNOWN_TORCHSCRIPT).write_bytes(b"weights")
        assert resolve_inception_weights() == (root / "data" / "fid-inception" / KNOWN_TORCHSCRIPT, False)
    monkeypatch.chdir(tmp_path)  # ../shared is found from the current folder at each call
    assert paths.shared_paths("data")[0] == tmp_path.parent / "shared" / "data"
