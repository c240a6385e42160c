import pytest

from diffbalance.infra.errors import DiffbalanceError
from diffbalance.imbalance.profiles import exponential_counts, linear_counts, profile_counts, step_counts
from diffbalance.imbalance.subset import kept_indices
from diffbalance.imbalance.targets import generation_counts
import torch


def test_cifar10_linear_profile_is_exactly_500_to_5000():
    counts = profile_counts("linear", [5000] * 10, n_min=500)
    assert counts == [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000]
    assert sum(counts) == 27_500
    assert sum(5000 - n for n in counts) == 22_500  # the images the paper generates


def test_linear_profile_with_class_order():
    assert profile_counts("linear", [100] * 3, n_min=10, order=[2, 0, 1]) == [20, 30, 10]


def test_exponential_profile_matches_cifar10_lt_convention():
    counts = exponential_counts(10, 5000, 10.0)
    assert counts[-1] == 5000 and counts[0] == 500
    assert counts == sorted(counts)
    assert counts[5] == int(5000 * 10 ** (-4 / 9))


def test_step_profile():
    assert step_counts(4, 100, 10.0) == [10, 10, 100, 100]
    assert linear_counts(3, 7) == [7, 14, 21]


@pytest.mark.parametrize("kwargs,match", [
    ({"profile": "zigzag"}, "unknown imbalance profile"),
    ({"profile": "linear", "n_min": 600}, "only 1000 exist"),
    ({"profile": "exponential", "ratio": 0.5}, "ratio"),
    ({"profile": "linear", "n_min": 10, "order": [0, 0, 1, 2]}, "permutation"),
])
def test_profile_errors(kwargs, match):
    profile = kwargs.pop("profile")
    with pytest.raises(DiffbalanceError, match=match):
        profile_counts(profile, [1000] * 4, **kwargs)


def test_kept_indices_first_and_seeded_random():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0])
    assert kept_indices(labels, [2, 1], "first").tolist() == [0, 1, 2]
    a = kept_indices(labels, [2, 1], "random", seed=3)
    assert a.tolist() == kept_indices(labels, [2, 1], "random", seed=3).tolist()
    assert torch.bincount(labels[a]).tolist() == [2, 1]


def test_targets_strategies_on_ten_rows():
    counts = [5, 3, 2]
    names = ["a", "b", "c"]
    assert generation_counts(counts, "auto") == [0, 2, 3]
    assert generation_counts(counts, "not majority") == [0, 2, 3]
    assert generation_counts(counts, "minority") == [0, 0, 3]
    assert generation_counts(counts, "not minority") == [0, 2, 0]
    assert generation_counts(counts, 0.8) == [0, 1, 2]
    assert generation_counts(counts, {"b": 4, 2: 6}, names) == [0, 1, 4]


@pytest.mark.parametrize("strategy,match", [
    ({"b": 1}, "below its current"),
    ({"zebra": 9}, "unknown class"),
    (1.5, "outside"),
    ("most", "unknown sampling_strategy"),
])
def test_target_errors(strategy, match):
    with pytest.raises(DiffbalanceError, match=match):
        generation_counts([5, 3, 2], strategy, ["a", "b", "c"])
