"""The Python API's misuses are one DiffbalanceError each (a ValueError, and a TypeError for wrong types, as
scikit-learn raises), naming the argument and the fix — never pathlib's or torch's own error."""

import numpy as np
import pytest
import torch

from diffbalance.classify.datasets import RebalancedDataset, class_balanced_sampler
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError, DiffbalanceTypeError

REAL = ImageSet(torch.zeros(6, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 0, 0, 0, 1, 1]), ("a", "b"))


@pytest.mark.parametrize("kwargs, name", [
    ({"real": 123}, "real"), ({"real": None}, "real"), ({"real": np.zeros((2, 3))}, "real"),
    ({"real": REAL, "fills": 123}, "fills"), ({"real": REAL, "fills": [REAL, 5]}, r"fills\[1\]"),
    ({"real": REAL, "transform": "flip"}, "transform"),
])
def test_rebalanced_dataset_arguments(kwargs, name):
    with pytest.raises(DiffbalanceTypeError, match=name) as err:
        RebalancedDataset(**kwargs)
    assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"labels": [0.5, 1.7]}, DiffbalanceTypeError, "integer class indices"),
    ({"labels": [True, False]}, DiffbalanceTypeError, "integer class indices"),
    ({"labels": "abc"}, DiffbalanceTypeError, "class indices"),
    ({"labels": [0, 1], "seed": 1.5}, DiffbalanceTypeError, "seed"),
    ({"labels": [0, 1], "seed": True}, DiffbalanceTypeError, "seed"),
    ({"labels": [0, 1], "num_samples": 2.5}, DiffbalanceTypeError, "num_samples"),
    ({"labels": [0, 1], "replacement": "yes"}, DiffbalanceTypeError, "replacement"),
    ({"labels": []}, DiffbalanceError, "non-empty"),
    ({"labels": [[0, 1]]}, DiffbalanceError, "1-D"),
    ({"labels": [0, -1]}, DiffbalanceError, "≥ 0"),
])
def test_class_balanced_sampler_arguments(kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        class_balanced_sampler(**kwargs)
    assert "\n" not in str(err.value)


def test_a_huge_class_index_needs_no_huge_table():
    sampler = class_balanced_sampler([0, 10**12, 10**12], seed=0)  # bincount would have allocated 8 TB
    assert sampler.weights.tolist() == [1.0, 0.5, 0.5]


def _public_misuses():
    import diffbalance as d

    real = REAL
    return {
        "ImageSet(123)": lambda: d.ImageSet(123, torch.tensor([0]), ("a",)),
        "ImageSet(float images)": lambda: d.ImageSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ("a", "b")),
        "ImageSet(float labels)": lambda: d.ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
                                                     torch.tensor([0.0, 1.0]), ("a", "b")),
        "ImageSet(label out of range)": lambda: d.ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
                                                           torch.tensor([0, 5]), ("a", "b")),
        "profile_counts(str)": lambda: d.profile_counts("linear", "abc"),
        "profile_counts(floats)": lambda: d.profile_counts("linear", [10.5, 3.0]),
        "apply_profile(123)": lambda: d.apply_profile(123, d.ImbalanceConfig()),
        "apply_profile(dict)": lambda: d.apply_profile(real, {"profile": "linear"}),
        "make_imbalanced(123)": lambda: d.make_imbalanced(123, [1, 1]),
        "generation_counts(str)": lambda: d.generation_counts("abc", "auto", ("a",)),
        "build_rebalancer(params str)": lambda: d.build_rebalancer("oversample", "x"),
        "fill(None)": lambda: d.fill(None, real, "/tmp/never"),
        "fill(reb, 123)": lambda: d.fill(d.build_rebalancer("oversample"), 123, "/tmp/never"),
        "load_fill(123)": lambda: d.load_fill(123, ("a",)),
        "load_fill(missing)": lambda: d.load_fill("/nonexistent-fill", ("a",)),
        "train_classifier(123)": lambda: d.train_classifier(123, d.TrainConfig(), seed=0),
        "train_classifier(dict)": lambda: d.train_classifier(real, {"epochs": 1}, seed=0),
        "train_classifier(seed 1.5)": lambda: d.train_classifier(real, d.TrainConfig(), seed=1.5),
        "load_config(123)": lambda: d.load_config(123),
        "run_experiment(dict)": lambda: d.run_experiment({"methods": ["none"]}, "/tmp/never"),
    }


@pytest.mark.parametrize("name", list(_public_misuses()))
def test_public_functions_refuse_misuse_in_one_line(name, tmp_path):
    with pytest.raises(DiffbalanceError) as err:
        _public_misuses()[name]()
    assert "\n" not in str(err.value) and " — fix: " in str(err.value)
