"""Contract tests over every registry entry — every data source, every FID feature kind — parametrized from the
registries, so an entry registered later is covered with no edit here. The test-only source "toy"
(tests/plugin_source.py) shows what adding a source takes: one new file and one import line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plugin_source  # noqa: F401  (registers the data source "toy": the one import line a new source needs)
import pytest
import torch
from PIL import Image
from fixtures_data import isolated_data_env, write_cifar_batches, write_fashion_idx, write_image_tree  # noqa: F401

from diffbalance.data.imageset import ImageSet
from diffbalance.data.registry import SOURCES, register_source
from diffbalance.data.sources import DataConfig, available_sources, load_train_test, source
from diffbalance.evaluate.fid import FidConfig, available_extractors, build_extractor, extractor_kind
from diffbalance.infra.errors import DiffbalanceError


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and " — fix: " in text, text
    return text


# --- data sources ---------------------------------------------------------------------------------------------
def fashion_files(tmp: Path, monkeypatch) -> dict:
    write_fashion_idx(tmp / "fashion", n_train=20, n_test=10)
    return {"root": str(tmp / "fashion")}


def cifar_batches(tmp: Path, monkeypatch) -> dict:
    write_cifar_batches(tmp / "cifar", per_batch=4)
    # torchvision checks the official md5s; the tiny fixture batches cannot match them
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    return {"root": str(tmp / "cifar")}


def image_folder(tmp: Path, monkeypatch) -> dict:
    write_image_tree(tmp / "images", {"cat": 5, "dog": 4, "owl": 6}, size=(10, 12))
    return {"root": str(tmp / "images"), "image_size": 8, "test_fraction": 0.4}


def hf_disk(tmp: Path, monkeypatch) -> dict:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    images = [Image.fromarray(np.full((6, 6, 3), 40 * k, np.uint8)) for k in range(6)]
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 0, 0, 1, 1, 1]}, features=features)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp / "hf"))
    return {"root": str(tmp / "hf"), "image_size": 8}


def no_files(tmp: Path, monkeypatch) -> dict:
    return {}


# the tiny files a source reads, as DataConfig options; a source that reads files needs its writer here
FIXTURES = {"fashion-mnist": fashion_files, "cifar10": cifar_batches, "folder": image_folder, "hf": hf_disk}


def tiny_config(name: str, tmp: Path, monkeypatch) -> DataConfig:
    return DataConfig(name=name, download=False, **FIXTURES.get(name, no_files)(tmp, monkeypatch))


def check_image_set(data: ImageSet) -> None:
    assert data.images.dtype == torch.uint8 and data.images.ndim == 4 and data.images.shape[1] in (1, 3)
    assert len(data) > 0 and data.labels.shape == (len(data),) and data.labels.dtype == torch.int64
    assert 0 <= int(data.labels.min()) and int(data.labels.max()) < len(data.class_names)
    assert len(data.class_names) >= 2 and all(isinstance(n, str) and n for n in data.class_names)


@pytest.mark.parametrize("name", available_sources())
def test_every_source_loads_uint8_sets_the_same_every_time(name, tmp_path, isolated_data_env, monkeypatch):
    config = tiny_config(name, tmp_path, monkeypatch)
    train, test = load_train_test(config)
    for data in (train, test):
        check_image_set(data)
        assert data.meta["data_config"] == config.to_dict()
    assert train.class_names == test.class_names and train.images.shape[1:] == test.images.shape[1:]
    for again in (load_train_test(config), load_train_test(config.replace(cache=False))):  # cached, then not
        for first, second in zip((train, test), again):
            assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
            assert first.class_names == second.class_names


@pytest.mark.parametrize("name", available_sources())
def test_every_source_refuses_a_missing_root_in_one_line(name, tmp_path, isolated_data_env):
    with pytest.raises(DiffbalanceError) as err:
        load_train_test(DataConfig(name=name, root=str(tmp_path / "nowhere"), download=False))
    one_line(err)


@pytest.mark.parametrize("name", available_sources())
@pytest.mark.parametrize("bad", [{"channels": 2}, {"on_corrupt": "ignore"}, {"test_fraction": 1.5}, {"cache": "no"}])
def test_every_source_refuses_bad_options_in_one_line_naming_the_key(name, bad, tmp_path, monkeypatch):
    options = {**FIXTURES.get(name, no_files)(tmp_path, monkeypatch), "name": name, **bad}
    with pytest.raises(DiffbalanceError) as err:
        DataConfig.from_dict(options, path="data")
    assert f"data.{next(iter(bad))}" in one_line(err)


def test_every_source_has_a_one_line_help_and_its_names_are_listed():
    for name in available_sources():
        assert source(name).name == name and source(name).help and "\n" not in source(name).help
    with pytest.raises(DiffbalanceError) as err:
        DataConfig.from_dict({"name": "imagenet"}, path="data")
    assert "unknown dataset 'imagenet' at data.name" in one_line(err)
    assert all(name in str(err.value) for name in available_sources())


def test_a_source_registered_outside_the_package_works_like_a_built_in_one():
    """tests/plugin_source.py: one @register_source; DataConfig, load_train_test and NAME:SPLIT specs accept it."""
    from diffbalance.experiment.image_sets import load_image_set

    assert "toy" in available_sources()
    train, test = load_train_test(DataConfig.from_dict({"name": "toy", "image_size": 8, "channels": 1}, path="data"))
    assert train.counts() == [6, 6, 6] and test.images.shape == (6, 1, 8, 8) and train.class_names[0] == "red"
    assert load_image_set("toy:train:linear=2").counts() == [2, 4, 6]  # the NAME:SPLIT parser knows it too
    with pytest.raises(DiffbalanceError) as err:
        load_train_test(DataConfig(name="toy", root="/somewhere"))
    assert "toy" in one_line(err)


def test_a_source_check_runs_when_the_config_is_built():
    def refuse_grey(config):
        if config.channels == 1:
            raise DiffbalanceError("dataset 'colour-only' has no grey images", "use channels 3")

    def load_toy_in_colour(config):
        return load_train_test(config.replace(name="toy"))

    def another_loader(config):
        return load_toy_in_colour(config)

    try:
        register_source("colour-only", help="a source with its own option check", check=refuse_grey)(load_toy_in_colour)
        train, _ = load_train_test(DataConfig(name="colour-only"))
        assert train.channels == 3
        with pytest.raises(DiffbalanceError, match="no grey images"):
            DataConfig(name="colour-only", channels=1)
        with pytest.raises(ValueError, match="registered twice"):  # a name is never silently taken over
            register_source("colour-only", help="another")(another_loader)
    finally:
        SOURCES.remove("colour-only")


def test_command_help_lists_every_built_in_source_and_feature_kind():
    from typer.main import get_command

    from diffbalance.cli.main import app

    commands = get_command(app).commands

    def help_of(command: str, param: str) -> str:
        return next(p.help for p in commands[command].params if p.name == param)

    built_in = [n for n in available_sources() if SOURCES.get(n).__module__.startswith("diffbalance.")]
    for command in ("make-lt", "train-generator"):
        assert all(name in help_of(command, "dataset") for name in built_in)
    assert all(name in help_of("fid", "a") for name in built_in)
    assert all(name in help_of("fid", "features") for name in available_extractors())


# --- FID feature extractors -----------------------------------------------------------------------------------
def random_inception_weights(tmp: Path) -> tuple[dict, object]:
    """A randomly initialised Inception pool3 net saved as a .pth: the real code path without the real weights."""
    from diffbalance.evaluate.fid import features

    torch.manual_seed(0)
    torch.save(features._Pool3Net().state_dict(), tmp / "inception.pth")
    return {"weights_path": str(tmp / "inception.pth")}, None


def tiny_trained_classifier(tmp: Path) -> tuple[dict, object]:
    """small_cnn trained one epoch on 16×16 colour images: domain features come from its penultimate layer."""
    from diffbalance.classify.config import TrainConfig
    from diffbalance.classify.train import train_classifier

    labels = torch.arange(24) % 2
    images = (torch.where(labels == 1, 170, 50)[:, None, None, None] + images_for(24, seed=5) // 4).to(torch.uint8)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, warmup_epochs=0.0, eval_batch_size=16)
    model = train_classifier(ImageSet(images, labels, ("dark", "bright")), config, device="cpu", seed=0, progress=False)
    return {}, model


# what a kind needs beyond its FidConfig: (FidConfig options, domain_model)
EXTRACTOR_SETUPS = {"inception": random_inception_weights, "domain": tiny_trained_classifier}


def images_for(n: int, seed: int) -> torch.Tensor:
    """uint8 (n, 3, 16, 16) random images."""
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("name", available_extractors())
def test_every_feature_kind_gives_finite_deterministic_batch_independent_features(name, tmp_path):
    options, domain_model = EXTRACTOR_SETUPS.get(name, lambda tmp: ({}, None))(tmp_path)
    cfg = FidConfig(features=name, cache=False, allow_download=False, batch_size=2, **options)
    images = images_for(2, seed=1)  # two: Inception runs at 299×299, about two seconds an image on one CPU core
    extractor = build_extractor(cfg, "cpu", domain_model)
    features = extractor(images)
    assert features.ndim == 2 and features.shape[0] == 2 and features.shape[1] >= 1
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    assert not torch.equal(features[0], features[1])  # they depend on the image
    assert torch.equal(build_extractor(cfg, "cpu", domain_model)(images), features)  # same build, same features
    one_at_a_time = build_extractor(cfg.replace(batch_size=1), "cpu", domain_model)(images)
    torch.testing.assert_close(one_at_a_time, features, rtol=1e-4, atol=1e-5)
    assert all(isinstance(getattr(extractor, key), str) for key in ("name", "checksum", "resize"))
    assert extractor.dim == features.shape[1]  # known after the first call at the latest


@pytest.mark.parametrize("name", available_extractors())
def test_every_feature_kind_has_a_one_line_help(name):
    kind = extractor_kind(name)
    assert kind.name == name and kind.help and "\n" not in kind.help


def test_unknown_features_list_every_kind_in_one_line():
    with pytest.raises(DiffbalanceError) as err:
        FidConfig.from_dict({"features": "pixels"}, path="fid")
    assert "unknown features 'pixels' at fid.features" in one_line(err)
    assert all(name in str(err.value) for name in available_extractors())
