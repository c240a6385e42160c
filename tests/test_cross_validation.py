"""Choices on all the training data: stratified K-fold folds, every class in every fold, a generator per fold, the
chosen setting refit on every image (GridSearchCV's refit=True), and the verdict's rows chosen on the folds."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config  # noqa: E402
from test_sweep import CFG  # noqa: E402
from test_validation import labelled  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.experiment.config import ExperimentConfig  # noqa: E402
from diffbalance.imbalance.validation import ValidationConfig, selection_folds, split_validation  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402


def test_folds_are_stratified_disjoint_and_seeded():
    data = labelled([5, 18, 40])
    cfg = ValidationConfig(folds=5, seed=3)
    assert split_validation(data, cfg) == (data, None)  # cross-validation holds nothing out of the final runs
    folds = selection_folds(data, None, cfg)
    assert [f.name for f in folds] == [f"fold{k}-of-5" for k in range(5)]
    held = torch.cat([f.held.images[:, 0, 0, 0] for f in folds])
    assert sorted(held.tolist()) == list(range(63))  # every image held out exactly once
    for f in folds:
        assert all(n >= 1 for n in f.held.counts())  # every class in every fold, the rarest (5 images) included
        assert set(f.held.images[:, 0, 0, 0].tolist()).isdisjoint(f.train.images[:, 0, 0, 0].tolist())
        assert len(f.train) + len(f.held) == 63
    assert [f.held.counts() for f in folds][0] == [1, 4, 8] or sum(folds[0].held.counts()) in (12, 13)
    again = selection_folds(data, None, cfg)
    other = selection_folds(data, None, ValidationConfig(folds=5, seed=4))
    assert all(torch.equal(a.held.images, b.held.images) for a, b in zip(folds, again))
    assert any(not torch.equal(a.held.images, b.held.images) for a, b in zip(folds, other))
    (one,) = selection_folds(data, labelled([1, 1, 1]), ValidationConfig(per_class=1))  # a held-out split: one fold
    assert one.count == 1 and len(one.held) == 3
    assert selection_folds(data, None, None) == []


def test_a_class_smaller_than_the_folds_is_one_line():
    with pytest.raises(DiffbalanceError, match="class 'a' has 3 training images, fewer than validation.folds 5") as e:
        selection_folds(labelled([3, 18, 40]), None, ValidationConfig(folds=5))
    assert "\n" not in str(e.value) and "folds to 3" in str(e.value)


@pytest.mark.parametrize("bad, match", [({"folds": 1}, "folds"), ({"folds": 3, "per_class": 2}, "exactly one"),
                                        ({"folds": 3, "score": "auc"}, "score"), ({"folds": 3, "seeds": [1, 1]}, "seeds"),
                                        ({"folds": 3, "generators": "some"}, "generators")])
def test_bad_cross_validation_sections(bad, match):
    with pytest.raises(DiffbalanceError, match=match):
        ValidationConfig.from_dict(bad, path="validation")


def test_cross_validation_refuses_filters_and_bad_quick_recipes():
    base = {"methods": [{"name": "c", "rebalancer": "cfg", "filter": {"factor": 2}}], "validation": {"folds": 3}}
    with pytest.raises(DiffbalanceError, match="filter"):
        ExperimentConfig.from_dict(base)
    with pytest.raises(DiffbalanceError, match="validation.train"):
        ExperimentConfig.from_dict({"methods": ["oversample"], "validation": {"folds": 3, "train": {"epochs": -1}}})


def cv_run(tmp_path, generators="per_fold"):
    real = {**CFG, "init": "real"}
    config = tiny_config(
        tmp_path, seeds=[0, 1], train={"epochs": 1, "batch_size": 8},
        methods=["oversample", {"name": "bs", "rebalancer": "none", "train": {"loss": "balanced_softmax"}},
                 {"name": "cfg", "rebalancer": "cfg", "params": real}],
        validation={"folds": 3, "seed": 0, "train": {"epochs": 1}, "generators": generators},
        sweep=[{"method": "cfg", "guidance_w": [1], "seeds": [0], "max_images_per_class": 2, "train": {"epochs": 1}}])
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    return out, json.loads((out / "results.json").read_text())


def test_cross_validated_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "cache"))
    out, results = cv_run(tmp_path)
    assert results["dataset"]["train_counts"] == [3, 6, 9]  # refit on every training image: nothing held out
    assert "validation_counts" not in results["dataset"]
    (sweep,) = results["sweep"]["sweeps"]
    point = sweep["points"]["w1-ddim-real0.5"]
    assert sorted({r["fold"] for r in point["scores"]}) == [0, 1, 2] and point["folds"] == 3
    assert len(sweep["cv_results"]["splits"]) == 3 and sweep["cv_results"]["rank_test_score"]
    # a generator per fold, trained on that fold's training part only (no held-out image seen)
    gens = sorted(p.parent.parent.name for p in (out / "generators").glob("*/fold*/cfg-generator-*/generator.json"))
    assert gens == ["fold0-of-3", "fold1-of-3", "fold2-of-3"]
    for k in range(3):
        fold_fill = json.loads((out / "sweep" / "cfg-w1-ddim-real0.5" / f"fold{k}-of-3" / "fill.json").read_text())
        assert sum(fold_fill["images_to_add"]) > 0
    rows = results["selection"]["small_cnn"]
    assert set(rows) == {"oversample", "bs", "cfg"} and rows["bs"]["from"] == "cross-validated quick classifiers"
    assert rows["cfg"]["fell_back"] == (sweep["chosen_point"] == "copies")
    verdict = results["verdict"]["small_cnn"]
    assert verdict["non_generative"] == max(["oversample", "bs"], key=lambda m: rows[m]["score"])
    assert "3-fold cross-validation" in verdict["chosen_on"]
    assert results["ledger"]["configs_scored"] == 1
    assert "cross-validation" in (out / "report.md").read_text()


def test_shared_generator_folds_use_the_final_generator(tmp_path):
    out, results = cv_run(tmp_path, generators="shared")
    assert not list((out / "generators").glob("*/fold*"))  # no generator per fold
    (gen,) = list((out / "generators").glob("*/cfg-generator-*/generator.json"))
    fold_fill = json.loads((out / "sweep" / "cfg-w1-ddim-real0.5" / "fold0-of-3" / "fill.json").read_text())
    assert Path(fold_fill["params"]["checkpoint"]) == gen.parent
    assert "it saw the held-out folds" in results["verdict"]["small_cnn"]["chosen_on"]


def test_each_further_seed_trains_on_its_own_fill_draw(tmp_path):
    config = tiny_config(tmp_path, seeds=[0, 1, 2], train={"epochs": 1, "batch_size": 8},
                         validation={"per_class": 1},
                         methods=["none", "oversample", "mixup", {"name": "cfg", "rebalancer": "cfg", "params": CFG}])
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    first = json.loads((out / "fills" / "mixup" / "fill.json").read_text())
    draws = [json.loads((out / "fill-draws" / "mixup" / f"seed{s}" / "fill.json").read_text()) for s in (1, 2)]
    assert len({first["seed"], *(d["seed"] for d in draws)}) == 3  # three draws, three base seeds
    assert not (out / "fill-draws" / "none").exists()  # a method that adds nothing draws nothing
    manifests = [(out / "fills" / "mixup" / "manifest.jsonl").read_text(),
                 (out / "fill-draws" / "mixup" / "seed1" / "manifest.jsonl").read_text()]
    assert manifests[0] != manifests[1]  # other images (other sources, other λ)
    cfg_draw = json.loads((out / "fill-draws" / "cfg" / "seed1" / "fill.json").read_text())
    assert cfg_draw["seed"] != json.loads((out / "fills" / "cfg" / "fill.json").read_text())["seed"]
    assert "fill draws" in results["verdict"]["small_cnn"]["variance_covers"]
    # only one generator: the draws differ in their images, not in the model
    assert len(list((out / "generators").glob("*/cfg-generator-*/generator.json"))) == 1


def test_a_shared_fill_is_one_draw_for_every_seed(tmp_path):
    config = tiny_config(tmp_path, seeds=[0, 1], train={"epochs": 1, "batch_size": 8}, fill_draws="shared",
                         validation={"per_class": 1},
                         methods=["none", "mixup", {"name": "cfg", "rebalancer": "cfg", "params": CFG}])
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    assert not (out / "fill-draws").exists()
    assert results["verdict"]["small_cnn"]["variance_covers"] == ["classifier seeds"]


def test_generator_seeds_give_every_draw_its_own_generator(tmp_path):
    config = tiny_config(tmp_path, seeds=[0, 1], train={"epochs": 1, "batch_size": 8}, generator_seeds=True,
                         validation={"per_class": 1}, methods=["oversample", {"name": "cfg", "rebalancer": "cfg",
                                                                              "params": CFG}])
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    assert len(list((out / "generators").glob("*/cfg-generator-*/generator.json"))) == 2  # seed 0's and seed 1's
    assert results["verdict"]["small_cnn"]["variance_covers"] == ["classifier seeds", "fill draws", "generators"]


def test_rows_are_chosen_alike_and_a_fallen_back_row_is_no_candidate():
    """Held-out split: every row scored by its final runs (the sweep only says whether it kept the copies); a
    generative row that kept the copies adds no generated image, so it cannot stand for generation."""
    from types import SimpleNamespace

    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.runner import _verdict
    from diffbalance.experiment.selection import best_rows, row_scores
    from diffbalance.report.verdict import verdict_text

    config = ExperimentConfig.from_dict({"methods": ["oversample", "mixup", {"name": "cfg", "rebalancer": "cfg"},
                                                     {"name": "cfg2", "rebalancer": "cfg"}],
                                         "validation": {"per_class": 2}})
    val = {"oversample": 0.7, "mixup": 0.72, "cfg": 0.9, "cfg2": 0.6}
    runs = [{"method": m, "classifier": "small_cnn", "seed": s, "accuracy": 0.5 + 0.01 * s,
             "validation": {"accuracy": v, "balanced_accuracy": v - 0.01 * s}} for m, v in val.items() for s in (0, 1)]
    sweep = {"sweeps": [{"method": "cfg", "chosen_point": "copies", "zero_point": "copies", "points": {}}]}
    st = SimpleNamespace(config=config)
    methods = [MethodConfig(name=m.name, rebalancer=m.rebalancer) for m in config.methods]
    rows = row_scores(st, None, methods, sweep, runs, "small_cnn")
    assert rows["cfg"]["fell_back"] and rows["cfg"]["score"] == pytest.approx(0.895)  # balanced accuracy, both seeds
    assert best_rows(rows) == ("cfg2", "mixup")  # cfg kept the copies: not a candidate, whatever its score
    v = _verdict(config, runs, {m: r for m, r in rows.items() if m != "cfg2"}, "small_cnn")
    assert v["generative"] is None and v["fell_back"] == ["cfg"] and v["verdict"] is None
    text = verdict_text(v)
    assert "Not tested" in text and "kept its zero point" in text and "**no**" not in text
