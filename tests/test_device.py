"""The device is handed off once: every public entry takes "auto" (here: the CPU), resolving joins nothing, and
joining a launched job is the explicit step of the entries (`entry_device`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_folder  # noqa: E402

from diffbalance.classify.config import TrainConfig  # noqa: E402
from diffbalance.classify.train import TrainedClassifier, train_classifier  # noqa: E402
from diffbalance.data.image_folder import load_image_folder  # noqa: E402
from diffbalance.data.sources import DataConfig  # noqa: E402
from diffbalance.evaluate.fid import FidConfig, build_extractor, fid, fid_embedder  # noqa: E402
from diffbalance.evaluate.fid.extra import kid, per_class_fid, precision_recall  # noqa: E402
from diffbalance.evaluate.fid.frechet import frechet_distance, gaussian_stats  # noqa: E402
from diffbalance.experiment.generator import train_generator_for  # noqa: E402
from diffbalance.experiment.image_sets import compare_image_sets  # noqa: E402
from diffbalance.generate.cfg.config import CFGTrainConfig  # noqa: E402
from diffbalance.generate.cfg.generator import load_generator  # noqa: E402
from diffbalance.generate.cfg.train import train_generator  # noqa: E402
from diffbalance.imbalance.subset import ImbalanceConfig  # noqa: E402
from diffbalance.infra.device import entry_device, resolve_device  # noqa: E402
from diffbalance.rebalance.folder import rebalance_folder  # noqa: E402
from diffbalance.rebalance.registry import build_rebalancer  # noqa: E402

AUTO = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GEN = dict(block_out_channels=(8, 16), train_steps=2, batch_size=4, checkpoint_every_steps=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_folder(tmp_path_factory.mktemp("images") / "images", per_class=(12, 6, 4))


@pytest.fixture(scope="module")
def data(folder):
    return load_image_folder(folder, image_size=8)


def test_classifier_entries_take_auto(data, tmp_path):
    clf = train_classifier(data, TrainConfig(epochs=1, batch_size=8), device="auto", seed=0, progress=False)
    assert clf.device == AUTO
    clf.save(tmp_path / "clf")
    assert TrainedClassifier.load(tmp_path / "clf", device="auto").device == AUTO


def test_rebalancer_and_folder_entries_take_auto(data, folder, tmp_path):
    reb = build_rebalancer("oversample", device="auto").fit(data)
    assert reb.device_ == AUTO
    x, y = build_rebalancer("mixup", device="auto").fit_resample(data.images.numpy(), data.labels.numpy())
    assert len(x) == len(y) == 36
    fills = rebalance_folder(folder, "cutmix", tmp_path / "fill", image_size=8, device="auto", progress=False)
    assert fills.counts() == [0, 6, 8]


def test_generator_entries_take_auto(data, folder, tmp_path):
    out = train_generator(data, CFGTrainConfig(**GEN), tmp_path / "gen", device="auto", progress=False)
    assert next(load_generator(out, "auto").unet.parameters()).device.type == AUTO.type
    config = DataConfig(name="folder", root=str(folder), image_size=8, cache=False)
    out = train_generator_for(config, ImbalanceConfig(profile="linear", n_min=1), CFGTrainConfig(**GEN),
                              tmp_path / "gen2", device="auto", progress=False)
    assert (Path(out) / "model_index.json").is_file()


def test_fid_entries_and_maths_take_auto(data, folder):
    cfg = FidConfig(features="random", cache=False)
    assert build_extractor(cfg, "auto").device == AUTO
    assert fid_embedder(cfg, "auto").stats_device == AUTO
    assert fid(data, data, cfg, device="auto")["fid"] == pytest.approx(0, abs=1e-6)
    assert compare_image_sets(str(folder), str(folder), cfg, device="auto")["fid"] == pytest.approx(0, abs=1e-6)
    a, b = torch.randn(30, 4), torch.randn(30, 4) + 1
    stats = gaussian_stats(a, "auto"), gaussian_stats(b, "auto")
    assert frechet_distance(*stats, device="auto") == pytest.approx(frechet_distance(*stats, device="cpu"))
    assert kid(a, b, subsets=3, subset_size=10, device="auto")["kid_mean"] is not None
    assert precision_recall(a, b, device="auto")["precision"] is not None
    labels = torch.arange(30) % 2
    assert set(per_class_fid(a, labels, b, labels, ("x", "y"), device="auto")) == {"x", "y"}


@pytest.mark.parametrize("name", ["gpu", "cuda:x", 3])
def test_bad_device_names_are_one_line_errors(name):
    from diffbalance.infra.errors import DiffbalanceError

    with pytest.raises(DiffbalanceError) as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_resolving_joins_nothing_and_an_entry_joins_explicitly(monkeypatch):
    from dist_helpers import free_port

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert not dist.is_initialized()
    assert resolve_device("cpu") == torch.device("cpu") and not dist.is_initialized()
    try:
        assert entry_device("cpu") == torch.device("cpu") and dist.is_initialized()
        assert entry_device("auto") == AUTO  # a second entry finds the job joined
    finally:
        dist.destroy_process_group()
