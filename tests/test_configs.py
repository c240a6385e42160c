"""One typed config tree: types, choices and ranges from annotations; key paths in one-line errors; round trips."""

import pytest
import torch

from diffbalance.infra.device import resolve_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.experiment.config import ExperimentConfig, load_config


def error_of(d):
    with pytest.raises(DiffbalanceError) as err:
        ExperimentConfig.from_dict(d)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("bad, where", [
    ({"methods": ["none", "oversample", "mixup", {"name": "c", "rebalancer": "cfg", "params": {"train": {"lr": "x"}}}]},
     "methods[3].params.train.lr"),
    ({"methods": ["none", {"name": "m", "rebalancer": "mixup", "params": {"alpha": "x"}}]}, "methods[1].params.alpha"),
    ({"methods": [{"name": "x", "rebalancer": "none", "train": {"lr": "a"}}]}, "methods[0].train.lr"),
    ({"methods": ["none"], "train": {"epochs": "abc"}}, "train.epochs"),
    ({"methods": ["none"], "reference_train": {"epochs": 0}}, "reference_train.epochs"),
    ({"methods": ["none"], "imbalance": {"n_min": "abc"}}, "imbalance.n_min"),
    ({"methods": ["none"], "fid": {"features": "pixels"}}, "fid.features"),
    ({"methods": ["none"], "fid": {"batchsize": 3}}, "fid"),
    ({"methods": ["none"], "data": {"name": "mnist"}}, "data.name"),
    ({"methods": ["none"], "classifiers": ["vgg"]}, "classifiers[0]"),
])
def test_errors_name_the_key_path(bad, where):
    assert where in error_of(bad)


@pytest.mark.parametrize("bad, words", [
    ({"methods": ["none"], "classifiers": "small_cnn"}, "not a list"),  # never split into characters
    ({"methods": {"none": 1}}, "must be a list"),
    ({"methods": ["none"], "seeds": 5}, "not a list"),
    ({"methods": ["none"], "sampling_strategy": "most"}, "sampling_strategy"),
    ({"methods": [{"name": "m", "rebalancer": "mixup", "params": {"sampling_strategy": "auto"}}]}, "top level"),
    ({"methods": ["none"], "train": {"nesterov": 1}}, "true or false"),
])
def test_wrong_shapes_are_errors_not_guesses(bad, words):
    assert words in error_of(bad)


def test_resolved_config_round_trips_and_resolves_recipes():
    demo = load_config("demo")
    by_name = {m.name: m for m in demo.methods}
    assert by_name["balanced-softmax"].train.loss == "balanced_softmax" and by_name["oversample"].train.loss == "ce"
    assert by_name["oversample"].train.epochs == by_name["balanced-softmax"].train.epochs == demo.train.epochs == 6
    # the reference classifier's own override (10 epochs) on top of the shared recipe, the rest inherited
    assert demo.reference_train.epochs == 10 and demo.reference_train.lr == demo.train.lr
    assert ExperimentConfig.from_dict(demo.to_dict()) == demo


def test_a_config_saved_in_the_older_short_form_reads_as_the_same_tree():
    short = {"methods": [{"name": "bs", "rebalancer": "none", "params": {}, "train": {"loss": "balanced_softmax"}}],
             "train": {"epochs": 3}, "reference_train": {}, "fid": {"features": "domain"}}
    full = ExperimentConfig.from_dict(short)
    assert ExperimentConfig.from_dict(full.to_dict()) == full and full.methods[0].train.epochs == 3


@pytest.mark.parametrize("spec, expected", [("cpu", "cpu"), (torch.device("cpu"), "cpu"), ("auto", None)])
def test_device_resolution_accepts_names_and_devices(spec, expected):
    device = resolve_device(spec)
    assert isinstance(device, torch.device)
    assert device.type == (expected or ("cuda" if torch.cuda.is_available() else "cpu"))


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", 3, "mps"])
def test_bad_devices_are_one_line_errors(spec):
    if isinstance(spec, str) and spec.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(DiffbalanceError):
        resolve_device(spec)


def test_the_old_target_key_is_read_as_sampling_strategy_with_a_note(capsys):
    from diffbalance.experiment.config import ExperimentConfig

    config = ExperimentConfig.from_dict({"methods": ["none"], "target": "not majority"})
    assert config.sampling_strategy == "not majority"
    err = " ".join(capsys.readouterr().err.split())
    assert "note: target is now called sampling_strategy" in err
    with pytest.raises(DiffbalanceError, match="both set"):
        ExperimentConfig.from_dict({"methods": ["none"], "target": "auto", "sampling_strategy": "auto"})
