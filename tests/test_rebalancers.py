"""Contract tests over every registered non-generative rebalancer (the generative ones have their own files,
which run the same store-level checks with tiny models)."""

import json

import numpy as np
import pytest
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.rebalance.registry import available_rebalancers, build_rebalancer
from diffbalance.rebalance.store import fill, load_fill, read_manifest

CLASSIC = ["oversample", "mixup", "cutmix"]


def tiny_set(channels=3):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (18, channels, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 3)
    return ImageSet(images, labels, ("a", "b", "c"), "tiny")


def strategy(data, add):
    """The sampling_strategy that adds `add[c]` images to class c (a {class: images after filling} mapping)."""
    return {c: n + a for c, (n, a) in enumerate(zip(data.counts(), add)) if a}


def make(name, data, add, **params):
    return build_rebalancer(name, {**params, "sampling_strategy": strategy(data, add)})


def test_registry_lists_all_methods():
    assert {"none", "oversample", "mixup", "cutmix", "cfg", "ldm", "ldm-img2img"} <= set(available_rebalancers())


@pytest.mark.parametrize("name", CLASSIC)
@pytest.mark.parametrize("channels", [1, 3])
def test_fill_reaches_target_with_labels_dtype_shape(tmp_path, name, channels):
    data = tiny_set(channels)
    add = [0, 5, 7]
    fills = fill(make(name, data, add, random_state=4), data, tmp_path / name, progress=False)
    assert fills.counts() == add
    assert fills.images.dtype == torch.uint8 and fills.images.shape[1:] == data.images.shape[1:]
    assert data.concat(fills).counts() == [10, 10, 10]
    records = read_manifest(tmp_path / name)
    assert len(records) == 12 and all("seed" in r and r["class_index"] in (1, 2) for r in records)


@pytest.mark.parametrize("name", CLASSIC)
def test_same_seed_same_images_at_any_batch_size(tmp_path, name):
    data = tiny_set()
    a = fill(make(name, data, [0, 5, 7], random_state=1, batch_size=1), data, tmp_path / "a", progress=False)
    b = fill(make(name, data, [0, 5, 7], random_state=1, batch_size=4), data, tmp_path / "b", progress=False)
    c = fill(make(name, data, [0, 5, 7], random_state=2), data, tmp_path / "c", progress=False)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_mixup_images_are_convex_mixes_of_two_class_images(tmp_path):
    data = tiny_set()
    fill(make("mixup", data, [0, 0, 4]), data, tmp_path, progress=False)
    fills = load_fill(tmp_path, data.class_names)
    for img, r in zip(fills.images, read_manifest(tmp_path)):
        a, b = r["source_indices"]
        assert data.labels[a] == data.labels[b] == 2
        expected = r["lam"] * data.images[a].float() + (1 - r["lam"]) * data.images[b].float()
        assert (img.float() - expected).abs().max() <= 1.0


def test_cutmix_pastes_a_box_from_the_partner(tmp_path):
    data = tiny_set()
    fill(make("cutmix", data, [0, 0, 6]), data, tmp_path, progress=False)
    fills = load_fill(tmp_path, data.class_names)
    for img, r in zip(fills.images, read_manifest(tmp_path)):
        a, b = r["source_indices"]
        from_a = (img == data.images[a]).all(0)
        from_b = (img == data.images[b]).all(0)
        assert bool((from_a | from_b).all())  # every pixel comes from one of the two
        assert abs(from_a.float().mean().item() - r["lam"]) < 0.2 or a == b


def test_resume_after_interruption_makes_exactly_the_missing_images(tmp_path):
    data = tiny_set()
    add = [0, 5, 7]
    full = fill(make("mixup", data, add, random_state=9, batch_size=2), data, tmp_path / "full", progress=False)

    reb = make("mixup", data, add, random_state=9, batch_size=2)
    original = type(reb).generate
    calls = {"n": 0}

    def flaky(self, c, seeds):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, c, seeds)

    type(reb).generate = flaky
    try:
        with pytest.raises(KeyboardInterrupt):
            fill(reb, data, tmp_path / "resumed", progress=False)
    finally:
        type(reb).generate = original
    assert len(read_manifest(tmp_path / "resumed")) == 4  # two finished batches of 2
    resumed = fill(make("mixup", data, add, random_state=9, batch_size=2), data, tmp_path / "resumed", progress=False)
    records = read_manifest(tmp_path / "resumed")
    keys = [(r["class_index"], r["index"]) for r in records]
    assert len(keys) == len(set(keys)) == 12  # none lost, none twice
    assert torch.equal(resumed.images, full.images)


def test_fill_folder_with_other_settings_is_refused(tmp_path):
    data = tiny_set()
    fill(make("mixup", data, [0, 1, 1], random_state=1), data, tmp_path, progress=False)
    with pytest.raises(DiffbalanceError, match="other settings"):
        fill(make("mixup", data, [0, 1, 1], random_state=2), data, tmp_path, progress=False)


def test_manifest_is_json_lines_with_files_that_exist(tmp_path):
    data = tiny_set()
    fill(make("oversample", data, [0, 2, 2]), data, tmp_path, progress=False)
    for r in read_manifest(tmp_path):
        assert (tmp_path / r["file"]).is_file()
        assert r["file"].startswith(data.class_names[r["class_index"]] + "/")
    header = json.loads((tmp_path / "fill.json").read_text())
    assert header["method"] == "oversample" and header["images_to_add"] == [0, 2, 2]
    assert (tmp_path / "complete.json").exists()


@pytest.mark.parametrize("name", CLASSIC)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
def test_fit_resample_on_image_arrays(name, layout):
    rng = np.random.default_rng(0)
    shape = {"NHWC": (16, 6, 6, 3), "NCHW": (16, 3, 6, 6), "NHW": (16, 6, 6)}[layout]
    X = rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.array([7] * 9 + [3] * 4 + [5] * 3)
    X_res, y_res = build_rebalancer(name, {"random_state": 0}).fit_resample(X, y)
    assert X_res.shape == (27, *shape[1:]) and X_res.dtype == np.uint8
    assert np.array_equal(X_res[:16], X)  # the originals come first, untouched
    assert sorted(np.unique(y_res, return_counts=True)[1].tolist()) == [9, 9, 9]
    assert set(y_res.tolist()) == {3, 5, 7}
    X_again, _ = build_rebalancer(name, {"random_state": 0}).fit_resample(X, y)
    assert np.array_equal(X_res, X_again)


def test_fit_resample_float_and_torch_inputs_keep_their_type():
    X = torch.rand(12, 3, 4, 4)
    y = torch.tensor([0] * 8 + [1] * 4)
    X_res, y_res = build_rebalancer("mixup", {}).fit_resample(X, y)
    assert isinstance(X_res, torch.Tensor) and X_res.dtype == torch.float32 and float(X_res.max()) <= 1
    assert torch.bincount(y_res).tolist() == [8, 8]


def test_fit_resample_with_dict_target_and_bad_inputs():
    X = np.zeros((6, 4, 4, 3), dtype=np.uint8)
    y = np.array([0, 0, 0, 0, 1, 1])
    _, y_res = build_rebalancer("oversample", {"sampling_strategy": {1: 3}}).fit_resample(X, y)
    assert np.bincount(y_res).tolist() == [4, 3]
    with pytest.raises(DiffbalanceError, match="shape"):
        build_rebalancer("oversample", {}).fit_resample(np.zeros((6, 4)), y)
    with pytest.raises(DiffbalanceError, match="one label per image"):
        build_rebalancer("oversample", {}).fit_resample(X, y[:3])


def test_unknown_rebalancer_and_parameter():
    with pytest.raises(DiffbalanceError, match="unknown rebalancer"):
        build_rebalancer("smote", {})
    with pytest.raises(DiffbalanceError, match="has no parameter"):
        build_rebalancer("mixup", {"beta": 1})


def test_interrupted_mid_batch_every_finished_image_is_recorded(tmp_path, monkeypatch):
    """Each image's manifest line follows its PNG at once: an interruption inside a batch leaves the finished
    images recorded, manifest == PNGs on disk, and the resume makes only the rest."""
    import diffbalance.rebalance.store as store

    data = tiny_set()
    add = [0, 5, 7]
    full = fill(make("cutmix", data, add, random_state=3), data, tmp_path / "full", progress=False)
    real, calls = store.write_png, [0]

    def write(image, path):
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        real(image, path)

    monkeypatch.setattr(store, "write_png", write)
    with pytest.raises(KeyboardInterrupt):
        fill(make("cutmix", data, add, random_state=3), data, tmp_path / "cut", progress=False)
    monkeypatch.undo()
    records = read_manifest(tmp_path / "cut")
    on_disk = {str(p.relative_to(tmp_path / "cut")) for p in (tmp_path / "cut").glob("*/*.png")}
    assert len(records) == 3 and {r["file"] for r in records} == on_disk  # one batch of 12, cut after 3
    resumed = fill(make("cutmix", data, add, random_state=3), data, tmp_path / "cut", progress=False)
    assert len(read_manifest(tmp_path / "cut")) == 12
    assert torch.equal(resumed.images, full.images)
