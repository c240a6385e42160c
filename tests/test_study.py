"""Studies: one experiment per profile, paired comparisons against named baselines, one summary."""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402
from diffbalance.experiment.config import ExperimentConfig  # noqa: E402
from diffbalance.report.verdict import paired_difference  # noqa: E402


def run(method, seed, acc, clf="small_cnn"):
    return {"method": method, "classifier": clf, "seed": seed, "accuracy": acc}


def test_paired_difference_on_hand_values():
    runs = [run("a", 0, 0.80), run("a", 1, 0.82), run("a", 2, 0.84),
            run("b", 0, 0.70), run("b", 1, 0.73), run("b", 2, 0.73)]
    c = paired_difference(runs, "small_cnn", "a", "b")
    assert c["differences"] == pytest.approx([0.10, 0.09, 0.11])
    assert c["mean_difference"] == pytest.approx(0.10) and c["std_difference"] == pytest.approx(0.01)
    assert c["beats"] is True and c["p_value"] < 0.01
    worse = paired_difference(runs, "small_cnn", "b", "a")
    assert worse["beats"] is False and worse["p_value"] > 0.99
    same = paired_difference(runs, "small_cnn", "a", "a")
    assert same["mean_difference"] == 0 and same["p_value"] == 1.0 and same["beats"] is False


def test_compare_with_must_name_a_method():
    with pytest.raises(DiffbalanceError, match="compare_with names nope"):
        ExperimentConfig.from_dict({"methods": ["none"], "compare_with": ["nope"]})


def test_study_writes_every_profile_and_one_summary(tmp_path):
    path = tiny_config(tmp_path, methods=["none", "oversample", "mixup"], validation={"per_class": 1},
                       compare_with=["oversample"], train={"epochs": 1, "batch_size": 8})
    config = yaml.safe_load(path.read_text())
    config["profiles"] = [{"name": "lin", "imbalance": {"profile": "linear", "n_min": 3}},
                          {"name": "exp", "imbalance": {"profile": "exponential", "n_max": 9, "ratio": 3}}]
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    main(["run", str(path), "--out", str(out), "--quiet", "--device", "cpu"])
    for name in ("lin", "exp"):
        results = json.loads((out / name / "results.json").read_text())
        table = results["comparisons"]["small_cnn"]["oversample"]
        assert set(table) == {"none", "mixup"} and table["none"]["seeds"] == [0, 1]
        assert "## Against `oversample` — small_cnn" in (out / name / "report.md").read_text()
    summary = (out / "summary.md").read_text()
    assert "| method | lin | exp |" in summary and "### Against `oversample` — small_cnn" in summary
    assert "## Few-shot classes" in summary and "## Wall time" in summary
    rows = [line.split(" |")[0] for line in summary.splitlines() if line.startswith("| none |")]
    assert len(rows) == 2  # one row per method in each table (accuracy, against oversample), not one per seed


def test_feature_fills_with_image_fills_and_synthetic_aware_training(tmp_path):
    ff = {"views": 2, "train_steps": 5, "batch_size": 8, "num_train_timesteps": 10, "num_inference_steps": 2,
          "hidden": 8, "depth": 1}
    cfg_params = {"guidance_w": 1.0, "num_inference_steps": 2, "sampler": "ddim",
                  "train": {"block_out_channels": [8, 16], "layers_per_block": 1, "train_steps": 3, "batch_size": 4,
                            "checkpoint_every_steps": 0}}
    config = tiny_config(tmp_path, seeds=[0], train={"epochs": 1, "batch_size": 8}, compare_with=["crt-real"], methods=[
        {"name": "crt-real", "rebalancer": "none", "train": {"head_retrain_epochs": 1}},
        {"name": "oversample-ff", "rebalancer": "oversample", "train": {"head_retrain_epochs": 1, "feature_fill": ff}},
        {"name": "cfg-ff", "rebalancer": "cfg", "params": cfg_params,
         "train": {"head_retrain_epochs": 1, "loss": "balanced_softmax", "prior": "real", "synthetic_weight": 0.5,
                   "feature_fill": ff}}])
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in results["runs"]}
    assert "feature_fill" not in runs["crt-real"]
    for name in ("oversample-ff", "cfg-ff"):
        summary = runs[name]["feature_fill"]
        assert summary["real_per_class"] == results["dataset"]["train_counts"]  # image fills are not used
        assert summary["synthetic_per_class"] == [6, 3, 0] and summary["feature_model_steps"] == 5
    saved = json.loads((out / "config.resolved.json").read_text())
    assert saved["methods"][1]["train"]["feature_fill"]["views"] == 2
    report = (out / "report.md").read_text()
    assert "## Feature fills" in report and "| oversample-ff | 2 | 3 6 9 | 6 3 0 |" in report


# --- wall time: every invocation's, on the device it ran on ---------------------------------------------------------


def test_wall_time_keeps_each_invocations_device_and_threads():
    """Hand-made records: a profile begun at 16 threads and resumed at 2 is labelled with both, each with its
    minutes; a results.json written before invocations were recorded counts as one, on the device it names."""
    from diffbalance.report.study import _wall_time
    from diffbalance.report.write import _stage_section

    resumed = {"device": "cpu (2 threads)", "processes": 1, "stage_seconds": {"prepare": 60.0, "fills": 1200.0},
               "invocations": [
                   {"device": "cpu (16 threads)", "processes": 1, "stage_seconds": {"prepare": 30.0, "fills": 1200.0}},
                   {"device": "cpu (2 threads)", "processes": 1, "stage_seconds": {"prepare": 30.0, "classifiers": 600.0}},
               ]}
    older = {"device": "cpu (8 threads)", "processes": 1, "stage_seconds": {"fills": 300.0, "classifiers": 300.0}}
    table = _wall_time([("lin", resumed, {}), ("exp", older, {})])
    assert "| lin | cpu (16 threads) 20.5 min, cpu (2 threads) 10.5 min | 31.0 | prepare 1.0, fills 20.0, " \
           "classifiers 10.0 |" in table
    assert "| exp | cpu (8 threads) | 10.0 | fills 5.0, classifiers 5.0 |" in table and "Total: 41.0 minutes." in table
    section = _stage_section(resumed)
    assert "cpu (16 threads) 20.5 min, cpu (2 threads) 10.5 min, over 2 invocation(s)" in section
    assert "| total | 1860.0 | 31.0 |" in section


def test_an_invocation_stopped_before_its_first_classifier_keeps_its_time(tmp_path, monkeypatch):
    """Ctrl-C before any classifier finished: results.json still records the invocation's stages (it wrote nothing
    before); the resumed run adds its own invocation, and an older record without invocations is kept as one."""
    import diffbalance.experiment.runner as runner

    path = tiny_config(tmp_path, methods=["none"], seeds=[0], train={"epochs": 1, "batch_size": 8})
    config, out = ExperimentConfig.from_dict(yaml.safe_load(path.read_text())), tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train_runs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(config, out, progress=False)
    first = json.loads((out / "results.json").read_text())
    assert first["runs"] == [] and len(first["invocations"]) == 1
    assert {"prepare", "fills", "classifiers"} <= set(first["invocations"][0]["stage_seconds"])
    assert first["invocations"][0]["device"].startswith("cpu (")

    older = {k: v for k, v in first.items() if k != "invocations"}  # as written before invocations were recorded
    (out / "results.json").write_text(json.dumps({**older, "device": "cpu (64 threads)",
                                                  "stage_seconds": {"fills": 1000.0}}))
    monkeypatch.undo()
    results = runner.run_experiment(config, out, progress=False)
    assert len(results["runs"]) == 1 and len(results["invocations"]) == 2
    assert results["invocations"][0] == {"device": "cpu (64 threads)", "processes": 1,
                                         "stage_seconds": {"fills": 1000.0}}
    assert results["stage_seconds"]["fills"] >= 1000.0 and results["stage_seconds"]["classifiers"] > 0
    assert json.loads((out / "results.json").read_text())["invocations"] == results["invocations"]
