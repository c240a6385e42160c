"""Diff-Mix's soft labels: a translated image's label keeps strength^γ of its target class and the rest on its source
class; the classifier trains on (N, K) class probabilities when given them."""

import json

import pytest
import torch

from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.experiment.training_set import fill_targets
from diffbalance.infra.errors import DiffbalanceError


def write_manifest(folder, records):
    folder.mkdir(parents=True)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_translated_images_keep_part_of_their_source(tmp_path):
    write_manifest(tmp_path / "fill", [
        {"class_index": 0, "index": 1, "source_class": 2, "strength": 0.25},   # translated from class 2
        {"class_index": 0, "index": 0, "source_class": 1, "strength": 0.5},    # (the manifest's order is not the fill's)
        {"class_index": 1, "index": 0, "source_indices": [3]},                 # a copy: hard label
        {"class_index": 1, "index": 1, "init": "real", "strength": 0.5},       # from its own class: hard label
    ])
    real = torch.tensor([2, 1])
    targets = fill_targets(real, torch.tensor([0, 0, 1, 1]), tmp_path / "fill", 3, gamma=1.0)
    expected = torch.tensor([[0, 0, 1], [0, 1, 0], [0.5, 0.5, 0], [0.25, 0, 0.75], [0, 1, 0], [0, 1, 0]])
    assert torch.allclose(targets, expected)
    half = fill_targets(real, torch.tensor([0, 0, 1, 1]), tmp_path / "fill", 3, gamma=0.5)
    assert half[3, 0] == pytest.approx(0.5) and half[3, 2] == pytest.approx(0.5)  # 0.25^0.5 = 0.5
    hard = fill_targets(real, torch.tensor([0, 0, 1, 1]), tmp_path / "fill", 3, gamma=0.0)  # the zero point
    assert torch.equal(hard, torch.nn.functional.one_hot(torch.tensor([2, 1, 0, 0, 1, 1]), 3).float())
    with pytest.raises(ValueError, match="lists 4 images for 3"):
        fill_targets(real, torch.tensor([0, 0, 1]), tmp_path / "fill", 3, gamma=1.0)


def toy_set(n=24):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = (labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 40, (n, 1, 8, 8), generator=g)).to(torch.uint8)
    return ImageSet(images, labels, ("a", "b", "c"))


RECIPE = TrainConfig(model="small_cnn", epochs=2, batch_size=8, lr=0.05, warmup_epochs=0)


def test_soft_targets_change_the_training_and_resume_only_with_the_same(tmp_path):
    data = toy_set()
    onehot = torch.nn.functional.one_hot(data.labels, 3).float()
    soft = onehot.clone()
    soft[:6] = torch.tensor([0.5, 0.25, 0.25])
    plain = train_classifier(data, RECIPE, device="cpu", seed=0, progress=False)
    as_onehot = train_classifier(data, RECIPE, device="cpu", seed=0, progress=False, targets=onehot)
    mixed = train_classifier(data, RECIPE, device="cpu", seed=0, progress=False, targets=soft,
                             checkpoint_dir=tmp_path / "ck")
    w = [next(iter(c.model.parameters())).detach() for c in (plain, as_onehot, mixed)]
    assert torch.allclose(w[0], w[1], atol=1e-5)  # one-hot probabilities are the labels
    assert not torch.allclose(w[0], w[2], atol=1e-4)  # soft ones train another model
    with pytest.raises(DiffbalanceError, match="another run"):  # a checkpoint of other soft labels is not resumed
        train_classifier(data, RECIPE, device="cpu", seed=0, progress=False, targets=onehot,
                         checkpoint_dir=tmp_path / "ck")


@pytest.mark.parametrize("bad, match", [(torch.zeros(24, 2), "shape"), (torch.zeros(24, 3), "probabilities"),
                                        (torch.full((24, 3), 0.5), "probabilities"),
                                        (torch.zeros(24, 3, dtype=torch.long), "float")])
def test_bad_targets_are_one_line_errors(bad, match):
    with pytest.raises(DiffbalanceError, match=match) as err:
        train_classifier(toy_set(), RECIPE, device="cpu", seed=0, progress=False, targets=bad)
    assert "\n" not in str(err.value)


def test_soft_labels_and_batch_mixing_do_not_combine():
    with pytest.raises(DiffbalanceError, match="soft_label_gamma"):
        TrainConfig.from_dict({"soft_label_gamma": 1.0, "batch_mix": "mixup"})
    with pytest.raises(DiffbalanceError, match="soft_label_gamma"):
        TrainConfig.from_dict({"soft_label_gamma": -1.0})
    data = toy_set()
    onehot = torch.nn.functional.one_hot(data.labels, 3).float()
    with pytest.raises(DiffbalanceError, match="batch_mix"):
        train_classifier(data, RECIPE.replace(batch_mix="mixup"), device="cpu", seed=0, progress=False,
                         targets=onehot)


def test_a_run_trains_translated_fills_on_soft_labels(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiment import tiny_config
    from test_sweep import CFG

    from diffbalance.cli.main import main

    translate = {**CFG, "init": "translate", "strength": 0.5}
    config = tiny_config(
        tmp_path, seeds=[0, 1], train={"epochs": 1, "batch_size": 8}, validation={"folds": 2},
        methods=["oversample", {"name": "cfg-soft", "rebalancer": "cfg", "params": translate,
                                "train": {"soft_label_gamma": 1.0}}],
        sweep={"method": "cfg-soft", "guidance_w": [1], "seeds": [0], "train": {"epochs": 1}})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    runs = [r for r in results["runs"] if r["method"] == "cfg-soft"]
    assert len(runs) == 2 and all(0 <= r["accuracy"] <= 1 for r in runs)
    resolved = json.loads((out / "config.resolved.json").read_text())
    assert resolved["methods"][1]["train"]["soft_label_gamma"] == 1.0
    point = results["sweep"]["sweeps"][0]["points"]["w1-ddim-translate0.5-soft1"]
    assert len(point["scores"]) == 2  # both folds scored, their quick classifiers on soft labels


# --- Diff-Mix's per-sample swap --------------------------------------------------------------------------------
def test_swap_probabilities_weigh_the_tail():
    from diffbalance.classify.swap import swap_probabilities

    assert swap_probabilities([9, 99, 999], 0.5) == pytest.approx([0.5, 0.05, 0.005])
    assert swap_probabilities([9, 99], 0.0) == [0.0, 0.0]  # the zero point


def test_swap_batch_swaps_within_the_class_by_seed():
    from diffbalance.classify.swap import SwapPool, swap_batch

    pool = ImageSet(torch.tensor([100, 101, 200], dtype=torch.uint8).view(3, 1, 1, 1), torch.tensor([0, 0, 1]),
                    ("a", "b", "c"))
    swap = SwapPool.build(pool, [1.0, 1.0, 1.0], torch.device("cpu"))
    images = torch.zeros(6, 1, 1, 1, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = swap_batch(swap, images, labels, seed=3)
    assert set(out[labels == 0].flatten().tolist()) <= {100, 101} and out[labels == 1].flatten().tolist() == [200, 200]
    assert out[labels == 2].flatten().tolist() == [0, 0]  # a class with no generated image is never swapped
    assert torch.equal(out, swap_batch(swap, images, labels, seed=3))  # the same draws for the same seed
    assert torch.equal(images, torch.zeros(6, 1, 1, 1, dtype=torch.uint8))  # the batch itself is not changed
    never = SwapPool.build(pool, [0.0, 0.0, 0.0], torch.device("cpu"))
    assert torch.equal(swap_batch(never, images, labels, seed=3), images)


def test_a_swap_run_trains_otherwise_and_needs_its_pool():
    data = toy_set()
    synthetic = torch.arange(len(data)) >= 18  # the last 6 are copies
    pool = ImageSet(torch.full((6, 1, 8, 8), 255, dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2]), data.class_names)
    plain = train_classifier(data, RECIPE, device="cpu", seed=0, progress=False, synthetic=synthetic)
    off = train_classifier(data, RECIPE, device="cpu", seed=0, progress=False, synthetic=synthetic, swap_pool=pool)
    swapped = train_classifier(data, RECIPE.replace(swap_share=1.0), device="cpu", seed=0, progress=False,
                               synthetic=synthetic, swap_pool=pool)
    w = [next(iter(c.model.parameters())).detach() for c in (plain, off, swapped)]
    assert torch.equal(w[0], w[1])  # share 0: the pool is not read — bit for bit the plain run
    assert not torch.allclose(w[0], w[2], atol=1e-4)
    with pytest.raises(DiffbalanceError, match="no pool"):
        train_classifier(data, RECIPE.replace(swap_share=0.5), device="cpu", seed=0, progress=False)
    other = ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(DiffbalanceError, match="swap pool holds"):
        train_classifier(data, RECIPE.replace(swap_share=0.5), device="cpu", seed=0, progress=False, swap_pool=other)
    with pytest.raises(DiffbalanceError, match="swap_share"):
        TrainConfig.from_dict({"swap_share": 1.5})


def test_a_swap_row_trains_on_copies_with_its_fill_as_the_pool(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiment import tiny_config
    from test_sweep import CFG

    from diffbalance.cli.main import main

    config = tiny_config(
        tmp_path, seeds=[0], train={"epochs": 1, "batch_size": 8}, validation={"per_class": 1},
        methods=["oversample", {"name": "cfg-swap", "rebalancer": "cfg", "params": CFG, "train": {"swap_share": 0.5}}])
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    over, swap = (next(r for r in results["runs"] if r["method"] == m) for m in ("oversample", "cfg-swap"))
    assert swap["train_images"] == over["train_images"]  # real + the oversampled copies, not real + the fill
    assert (out / "fills" / "cfg-swap" / "complete.json").is_file()  # the pool
