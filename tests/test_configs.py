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


# --- old names (infra.renames): each still read, with its note; messages say today's name -------------------------


def _said(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_the_old_target_option_is_read_as_sampling_strategy_with_a_note(tmp_path, capsys):
    from test_experiment import tiny_folder

    from diffbalance.cli.main import main

    folder = tiny_folder(tmp_path / "images", per_class=(12, 6, 3))
    argv = ["rebalance", str(folder), "--method", "oversample", "--out", str(tmp_path / "fill"), "--image-size", "8"]
    try:
        main([*argv, "--target", '{"striped": 5}'])
    except SystemExit as done:
        assert done.code in (0, None)
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())
    assert "2 images of 8×8 written" in said and "(per class: [0, 0, 2])" in said  # 3 striped images filled up to 5
    assert "note: --target is now called --sampling-strategy" in said
    with pytest.raises(SystemExit) as done:
        main([*argv, "--target", "auto", "--sampling-strategy", "auto"])
    assert done.value.code == 2 and "error: --target and --sampling-strategy are both set" in _said(capsys)


@pytest.mark.parametrize("scale, w", [(7.5, 6.5), (1.0, 0.0)])
def test_an_old_ldm_fill_header_reads_guidance_scale_as_w_with_a_note(capsys, scale, w):
    from diffbalance.rebalance.store import _saved_identity

    saved = _saved_identity({"method": "ldm", "params": {"guidance_scale": scale}})  # format 1: diffusers' s = 1 + w
    assert saved["params"]["guidance_w"] == w and "guidance_scale" not in saved["params"]
    assert ("note: fill.json params.guidance_scale is now called guidance_w (read as guidance_w = guidance_scale − 1"
            in _said(capsys))


def test_an_old_results_json_reads_fill_counts_with_a_note(capsys):
    from diffbalance.report.write import _provenance

    dataset = {"name": "tiny", "image_shape": [3, 8, 8], "profile": "linear", "train_counts": [9, 6, 3],
               "fill_counts": [0, 3, 6], "test_count": 9}
    text = _provenance({"dataset": dataset, "versions": {}, "device": "cpu"}, {"seeds": [0], "fill_seed": 0})
    assert "fill images per class [0, 3, 6] (9 images)" in text
    assert "note: results.json dataset.fill_counts is now called images_to_add" in _said(capsys)


def test_messages_about_the_sampling_strategy_use_its_name(tmp_path, monkeypatch):
    import yaml
    from test_experiment import tiny_config

    from diffbalance.experiment.stage import prepare_stage
    from diffbalance.imbalance.targets import generation_counts

    with pytest.raises(DiffbalanceError, match="unknown sampling_strategy 'most'"):
        generation_counts([5, 3, 2], "most")
    config = ExperimentConfig.from_dict(yaml.safe_load(tiny_config(tmp_path).read_text()))
    monkeypatch.setattr("diffbalance.infra.resources.available_memory_bytes", lambda: 1024)
    with pytest.raises(DiffbalanceError) as err:
        prepare_stage(config, tmp_path / "run", progress=False)
    assert "needs about" in err.value.problem and err.value.fix.startswith("lower sampling_strategy")
