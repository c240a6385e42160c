"""DataConfig validation and load_train_test over each dataset kind (tiny fixtures)."""

from __future__ import annotations

import pytest
from fixtures_data import isolated_data_env, write_fashion_idx, write_image_tree  # noqa: F401 (fixture)

from diffbalance.data.sources import DataConfig, available_sources, load_train_test
from diffbalance.infra.errors import DiffbalanceError


def test_unknown_dataset_lists_the_names():
    with pytest.raises(DiffbalanceError) as err:
        DataConfig(name="imagenet")
    assert all(name in str(err.value) for name in available_sources())


@pytest.mark.parametrize(
    "bad",
    [{"nmae": "cifar10"}, {"image_size": "32"}, {"download": "yes"}, {"channels": True}, {"root": 3},
     {"name": "folder"}, {"test_fraction": 1.5}, {"on_corrupt": "ignore"}, {"channels": 4}],
)
def test_from_dict_rejects_bad_input(bad):
    with pytest.raises(DiffbalanceError):
        DataConfig.from_dict(bad)


def test_from_dict_round_trip():
    config = DataConfig(name="folder", root="/x", image_size=16, channels=1, test_fraction=0.25)
    assert DataConfig.from_dict(config.to_dict()) == config


def test_fashion_mnist_from_root(tmp_path, isolated_data_env):
    write_fashion_idx(tmp_path, n_train=30, n_test=10)
    train, test = load_train_test(DataConfig(name="fashion-mnist", root=str(tmp_path), download=False))
    assert len(train) == 30 and len(test) == 10 and train.meta["data_config"]["root"] == str(tmp_path)


def test_folder_with_test_folder_uses_train_class_order(tmp_path, isolated_data_env):
    write_image_tree(tmp_path / "tr", {"a": 3, "b": 2}, size=(5, 5))
    write_image_tree(tmp_path / "te", {"a": 1, "b": 2}, size=(7, 7))
    config = DataConfig(name="folder", root=str(tmp_path / "tr"), test_root=str(tmp_path / "te"), image_size=5)
    train, test = load_train_test(config)
    assert train.counts() == [3, 2] and test.counts() == [1, 2] and test.image_size == (5, 5)
    write_image_tree(tmp_path / "te", {"c": 1}, size=(7, 7))
    with pytest.raises(DiffbalanceError, match="differ from the training classes"):
        load_train_test(config)


def test_missing_folder_is_named(tmp_path, isolated_data_env):
    with pytest.raises(DiffbalanceError, match="nope"):
        load_train_test(DataConfig(name="folder", root=str(tmp_path / "nope")))
    write_image_tree(tmp_path / "tr", {"a": 3}, size=(5, 5))
    with pytest.raises(DiffbalanceError, match="test folder"):
        load_train_test(DataConfig(name="folder", root=str(tmp_path / "tr"), test_root=str(tmp_path / "nope")))
