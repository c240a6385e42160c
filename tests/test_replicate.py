"""Replication: the run's chosen recipes frozen and its verdict re-tested on fresh draws of the same profile."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config  # noqa: E402
from test_sweep import CFG  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.experiment.config import ExperimentConfig, ReplicateConfig  # noqa: E402
from diffbalance.experiment.replicate import draw_config, replication_table  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402


def test_a_draw_freezes_the_choices_and_changes_data_and_seeds():
    config = ExperimentConfig.from_dict({
        "methods": ["oversample", "mixup", {"name": "cfg", "rebalancer": "cfg", "params": {"init": "real"}}],
        "validation": {"per_class": 2}, "seeds": [0, 1], "fill_seed": 3,
        "imbalance": {"profile": "exponential", "n_max": 40, "ratio": 10},
        "sweep": {"method": "cfg", "guidance_w": [1, 2]}})
    results = {"verdict": {"small_cnn": {"generative": "cfg", "non_generative": "oversample", "verdict": "better"}},
               "sweep": {"sweeps": [{"method": "cfg", "also": [], "chosen_point": "w2-ddim", "zero_point": "copies",
                                     "chosen": {"guidance_w": 2.0},
                                     "points": {"w2-ddim": {"guidance_w": 2.0, "sampler": "ddim", "init": "real",
                                                            "strength": 0.5, "synthetic_share": 1.0}}}]},
               "dataset": {"class_names": [str(c) for c in range(10)]}}
    cfg = ReplicateConfig(draws=2, seed=7)
    d0, d1 = (draw_config(config, results, d, cfg) for d in (0, 1))
    assert [m.name for m in d0.methods] == ["oversample", "cfg"]  # only the verdict's pair
    assert d0.sweep is None and d0.replicate is None and d0.compare_with == ()
    cfg_params = next(m for m in d0.methods if m.name == "cfg").params
    assert cfg_params["guidance_w"] == 2.0 and cfg_params["sampler"] == "ddim"  # the sweep's choice, frozen
    assert (d0.imbalance.selection, d0.imbalance.seed, d1.imbalance.seed) == ("random", 7, 8)
    assert d0.imbalance.order[:2] == (4, 5) and d1.imbalance.order[:2] == (8, 9)  # other classes are the rare ones
    assert sorted(d0.imbalance.order) == list(range(10))
    assert d0.seeds == (1000, 1001) and d1.seeds == (2000, 2001) and d0.fill_seed == 1003
    assert d0.validation == config.validation  # the replicas train without a held-out split, as the run did
    cv = config.replace(validation=config.validation.replace(per_class=None, folds=3), sweep=None)
    assert draw_config(cv, results | {"sweep": None}, 0, cfg).validation is None  # CV refit: every image trains
    with pytest.raises(DiffbalanceError, match="no verdict to replicate"):
        draw_config(config, {"verdict": {}, "dataset": results["dataset"]}, 0, cfg)


def test_replicated_means_the_same_verdict_word():
    results = {"verdict": {"c": {"generative": "g", "non_generative": "b", "verdict": "better",
                                 "mean_difference": 0.02, "ci95": [0.01, 0.03]}}}

    def draw(diffs):
        runs = [{"method": m, "classifier": "c", "seed": s, "accuracy": 0.5 + (d if m == "g" else 0)}
                for s, d in enumerate(diffs) for m in ("g", "b")]
        return ExperimentConfig.from_dict({"methods": ["oversample"]}), {"runs": runs}

    table = replication_table(results, [draw([0.02, 0.03, 0.025]), draw([0.03, -0.02, 0.01])])["c"]
    assert [r["verdict"] for r in table["draws"]] == ["better", "inconclusive"]
    assert [r["replicated"] for r in table["draws"]] == [True, False] and (table["replicated"], table["of"]) == (1, 2)


def test_replicate_end_to_end_and_from_the_cli(tmp_path):
    config = tiny_config(
        tmp_path, seeds=[0, 1], train={"epochs": 1, "batch_size": 8}, validation={"per_class": 1},
        methods=["oversample", {"name": "cfg", "rebalancer": "cfg", "params": {**CFG, "init": "real"}}],
        replicate={"draws": 2})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    table = results["replication"]["verdicts"]["small_cnn"]
    assert (table["generative"], table["non_generative"]) == ("cfg", "oversample") and table["of"] == 2
    for d, row in enumerate(table["draws"]):
        draw = json.loads((out / "replication" / f"draw{d}-seed{d + 1}" / "config.resolved.json").read_text())
        assert draw["imbalance"]["selection"] == "random" and draw["seeds"] == [1000 * (d + 1), 1000 * (d + 1) + 1]
        assert row["replicated"] == (row["verdict"] == results["verdict"]["small_cnn"]["verdict"])
    assert "## Does the verdict replicate?" in (out / "report.md").read_text()
    runs = json.loads((out / "replication" / "draw0-seed1" / "results.json").read_text())["runs"]
    main(["replicate", str(out), "--draws", "1", "--quiet"])  # draw 0 is finished: resumed, not trained again
    again = json.loads((out / "replication" / "draw0-seed1" / "results.json").read_text())["runs"]
    assert [r["train_seconds"] for r in again] == [r["train_seconds"] for r in runs]
    assert "replicated on" in (out / "replication.md").read_text()


def test_replicate_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["replicate", str(tmp_path / "nothing")])
    assert e.value.code == 2 and "not a finished diffbalance run" in capsys.readouterr().err
