"""The rebalancer as an imbalanced-learn / scikit-learn estimator: parameters, clone, plan, identity sampler."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

import diffbalance
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.rebalance.registry import available_rebalancers, build_rebalancer, rebalancer_class


def tiny_set():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (18, 3, 8, 8), dtype=torch.uint8, generator=gen)
    return ImageSet(images, torch.tensor([0] * 10 + [1] * 5 + [2] * 3), ("a", "b", "c"), "tiny")


@pytest.mark.parametrize("name", ["none", "oversample", "mixup", "cutmix", "cfg", "ldm", "ldm-img2img"])
def test_every_rebalancer_clones_with_its_parameters(name):
    reb = build_rebalancer(name, {"random_state": 7, "sampling_strategy": "not minority"})
    copy = clone(reb)
    assert type(copy) is type(reb) and copy is not reb
    assert copy.get_params() == reb.get_params()
    assert copy.set_params(random_state=8).random_state == 8 and reb.random_state == 7


def test_rebalancer_classes_are_exported_from_the_package():
    for name in available_rebalancers():
        cls = rebalancer_class(name)
        assert getattr(diffbalance, cls.__name__) is cls


def test_plan_is_sampling_strategy_():
    data = tiny_set()
    reb = build_rebalancer("oversample", sampling_strategy="not minority")
    assert reb.plan(data) == {1: 5} and reb.sampling_strategy_ == {1: 5}
    assert build_rebalancer("oversample").plan(data) == {1: 5, 2: 7}
    assert build_rebalancer("oversample", sampling_strategy={"c": 4}).plan(data) == {2: 1}


def test_none_is_the_identity_sampler(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    y = np.array([0, 0, 0, 0, 1, 1])
    reb = build_rebalancer("none")
    X_res, y_res = reb.fit_resample(X, y)
    assert X_res is X and y_res is y and reb.sampling_strategy_ == {}
    fills = diffbalance.fill(reb, tiny_set(), tmp_path / "none", progress=False)
    assert len(fills) == 0 and fills.images.shape[1:] == (3, 8, 8)
    assert diffbalance.load_fill(tmp_path / "none", ("a", "b", "c")).counts() == [0, 0, 0]


def test_fit_resample_returns_float_originals_bit_for_bit():
    X = np.random.default_rng(1).random((10, 3, 5, 5))  # float64, not on the 1/255 grid
    y = np.array([0] * 7 + [1] * 3)
    X_res, y_res = build_rebalancer("mixup", random_state=0).fit_resample(X, y)
    assert X_res.dtype == np.float64 and np.array_equal(X_res[:10], X)
    assert np.bincount(y_res).tolist() == [7, 7] and X_res.max() <= 1


def test_parameters_are_checked_from_their_annotations():
    with pytest.raises(DiffbalanceError, match=r"methods\[2\]\.params\.alpha='x' is not a number"):
        build_rebalancer("mixup", {"alpha": "x"}, path="methods[2].params")
    with pytest.raises(DiffbalanceError, match=r"alpha=-1\.0 is invalid"):
        build_rebalancer("mixup", {"alpha": -1})
    with pytest.raises(DiffbalanceError, match="batch_size"):
        build_rebalancer("cutmix", {"batch_size": 0})
    with pytest.raises(DiffbalanceError, match="unknown sampler"):
        build_rebalancer("cfg", {"sampler": "heun"})
