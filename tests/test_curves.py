"""Training curves (issue 19): classifier history per epoch (both stages, validation accuracy, resume), the CFG
generator's loss records (generator.json, resume), results.json, the report's figures and TensorBoard's --log-dir."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import diffbalance.classify.train as train_mod
import diffbalance.generate.cfg.train as cfg_train
from diffbalance.classify.train import TrainedClassifier, train_classifier
from diffbalance.cli.main import main
from diffbalance.data.imageset import ImageSet
from diffbalance.experiment.fills import generator_histories
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.train import train_generator
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.report.write import write_report
from test_cfg import TINY, toy_set
from test_classify_train import tiny_config, tiny_set
from test_experiment import tiny_config as experiment_config
from test_experiment import tiny_folder
from test_report import _config, _fills, _results

CPU = torch.device("cpu")


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def _weights(clf: TrainedClassifier) -> dict[str, torch.Tensor]:
    return clf.model.state_dict()


# --- classifiers ---------------------------------------------------------------------------------------------------


def test_history_has_one_record_per_epoch_of_both_stages():
    data, validation = tiny_set(), tiny_set(n=16)
    cfg = tiny_config(epochs=4, head_retrain_epochs=2)
    clf = train_classifier(data, cfg, device=CPU, seed=0, progress=False, validation=validation)
    h = clf.history
    assert [(r["stage"], r["epoch"]) for r in h] == [("train", 1), ("train", 2), ("train", 3), ("train", 4),
                                                    ("head", 1), ("head", 2)]
    assert set(h[0]) == {"stage", "epoch", "loss", "lr", "validation_accuracy", "seconds"}
    train_losses = [r["loss"] for r in h if r["stage"] == "train"]
    assert train_losses[-1] < 0.5 * train_losses[0]  # a learnable set: the loss falls
    assert all(0 <= r["validation_accuracy"] <= 1 for r in h) and h[3]["validation_accuracy"] >= 0.9
    assert h[3]["lr"] == pytest.approx(0.0, abs=1e-9) and h[0]["lr"] > 0  # cosine to 0 at the end of each stage
    assert all(r["seconds"] >= 0 for r in h)
    plain = train_classifier(data, tiny_config(epochs=2), device=CPU, seed=0, progress=False)
    assert len(plain.history) == 2 and all(r["validation_accuracy"] is None for r in plain.history)


def test_validation_changes_no_weight_and_no_loss():
    data = tiny_set()
    cfg = tiny_config(epochs=3, head_retrain_epochs=1, ema_decay=0.9, batch_mix="mixup")
    seen = []
    with_val = train_classifier(data, cfg, device=CPU, seed=2, progress=False, validation=tiny_set(n=16),
                                on_epoch=seen.append)
    without = train_classifier(data, cfg, device=CPU, seed=2, progress=False)
    for k, v in _weights(without).items():
        assert torch.equal(v, _weights(with_val)[k]), k  # bit-identical: eval mode, no random draw
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "validation_accuracy")} for r in h]  # noqa: E731
    assert strip(with_val.history) == strip(without.history)
    assert seen == with_val.history  # the callback got every record as it was made


@pytest.mark.parametrize("stop", [("_train_one_epoch", 1), ("retrain_head_epoch", 1)])
def test_a_resumed_run_returns_the_whole_curve(tmp_path, monkeypatch, stop):
    data, validation = tiny_set(), tiny_set(n=16)
    cfg = tiny_config(epochs=3, head_retrain_epochs=2, checkpoint_every_epochs=1)
    kwargs = dict(device=CPU, seed=1, progress=False, validation=validation)
    straight = train_classifier(data, cfg, **kwargs)
    name, at = stop
    real = getattr(train_mod, name)
    epoch_arg = 1 if name == "_train_one_epoch" else 2

    def interrupted(*args):
        if args[epoch_arg] == at:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(train_mod, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(data, cfg, checkpoint_dir=tmp_path, **kwargs)
    saved = json.loads((tmp_path / "resume" / "state.json").read_text())["history"]
    assert len(saved) == (1 if name == "_train_one_epoch" else 4)
    monkeypatch.undo()
    resumed = train_classifier(data, cfg, checkpoint_dir=tmp_path, **kwargs)
    assert _without_seconds(resumed.history) == _without_seconds(straight.history)
    assert all(torch.equal(v, _weights(resumed)[k]) for k, v in _weights(straight).items())
    resumed.save(tmp_path / "clf")
    assert TrainedClassifier.load(tmp_path / "clf", "cpu").history == resumed.history


def test_validation_of_other_classes_is_refused():
    data = tiny_set(n=16)
    other = ImageSet(data.images, data.labels, ("light", "heavy"))
    with pytest.raises(DiffbalanceError, match="validation images"):
        train_classifier(tiny_set(), tiny_config(epochs=1), device=CPU, seed=0, progress=False, validation=other)


# --- the CFG generator ---------------------------------------------------------------------------------------------


def test_generator_history_is_in_generator_json_and_survives_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(cfg_train, "LOSS_EVERY_STEPS", 3)
    cfg = CFGTrainConfig(**{**TINY, "train_steps": 6, "checkpoint_every_steps": 4})
    data = toy_set()
    straight = json.loads((train_generator(data, cfg, tmp_path / "a", CPU, progress=False) / "generator.json")
                          .read_text())["history"]
    assert [r["step"] for r in straight] == [3, 4, 6]  # every 3 steps, at the checkpoint and at the end
    assert all(set(r) == {"step", "loss", "lr"} and r["loss"] > 0 for r in straight)

    real_save = cfg_train._save_checkpoint

    def save_then_crash(out_dir, step, *args):
        real_save(out_dir, step, *args)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(cfg_train, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_generator(data, cfg, tmp_path / "b", CPU, progress=False)
    state = json.loads((tmp_path / "b" / "checkpoint-4" / "train_state" / "state.json").read_text())
    assert state["history"] == straight[:2]
    monkeypatch.setattr(cfg_train, "_save_checkpoint", real_save)
    records = []
    out = train_generator(data, cfg, tmp_path / "b", CPU, progress=False, on_record=records.append)
    assert json.loads((out / "generator.json").read_text())["history"] == straight  # values, bit for bit
    assert records == straight[2:]  # the callback sees the records this invocation made

    (tmp_path / "run" / "generators" / "cfg-abc").mkdir(parents=True)
    (tmp_path / "a").rename(tmp_path / "run" / "generators" / "cfg-abc" / "cfg-generator-1")
    assert generator_histories(tmp_path / "run") == {"cfg-abc/cfg-generator-1": straight}


# --- experiment, report, TensorBoard -------------------------------------------------------------------------------


def test_results_runs_carry_their_history(tmp_path):
    config = experiment_config(tmp_path, methods=["none"], seeds=[0], validation={"per_class": 1})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert [r["epoch"] for r in run["history"]] == [1, 2]
    assert all(r["validation_accuracy"] is not None for r in run["history"])
    assert "## Training curves" in (out / "report.md").read_text()
    assert (out / "figures" / "training_classifiers.png").is_file()


def test_the_report_draws_both_curve_figures(tmp_path):
    results = _results()
    for k, run in enumerate(results["runs"]):
        run["history"] = [{"stage": "train", "epoch": e, "loss": 1.0 / e + 0.01 * k, "lr": 0.1,
                           "validation_accuracy": 0.5 + 0.1 * e, "seconds": 0.1} for e in (1, 2, 3)]
        run["history"].append({"stage": "head", "epoch": 1, "loss": 0.2, "lr": 0.0, "validation_accuracy": 0.8,
                               "seconds": 0.1})
    results["generators"] = {"cfg-abc/cfg-generator-1": [{"step": s, "loss": 1 / s, "lr": 1e-4} for s in (25, 50)]}
    report = write_report(tmp_path, results, _fills(), {"mixup": _fills()}, _config()).read_text()
    section = report.split("## Training curves")[1]
    assert "figures/training_classifiers.png" in section and "figures/training_generators.png" in section
    assert (tmp_path / "figures" / "training_classifiers.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "training_generators.png").stat().st_size > 1000
    plain = write_report(tmp_path / "plain", _results(), _fills(), {"mixup": _fills()}, _config()).read_text()
    assert "## Training curves" not in plain  # runs without a curve (older results.json): no section


def test_log_dir_writes_tensorboard_scalars_and_nothing_without_it(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = experiment_config(tmp_path, methods=["none"], seeds=[0], validation={"per_class": 1})
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    main(["run", str(config), "--out", str(tmp_path / "plain"), "--quiet", "--device", "cpu"])
    assert "torch.utils.tensorboard" not in sys.modules  # off: not even imported
    assert not (tmp_path / "tb").exists()

    main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu",
          "--log-dir", str(tmp_path / "tb")])
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"none/small_cnn/seed0/train/loss", "none/small_cnn/seed0/train/lr",
            "none/small_cnn/seed0/train/validation_accuracy"} <= tags
    assert [e.step for e in events.Scalars("none/small_cnn/seed0/train/loss")] == [1, 2]
    runs = json.loads((tmp_path / "run" / "results.json").read_text())["runs"]
    assert [e.value for e in events.Scalars("none/small_cnn/seed0/train/loss")] == pytest.approx(
        [r["loss"] for r in runs[0]["history"]])
    # the log dir changes no result: the run resumes (nothing retrained) without it
    assert json.loads((tmp_path / "run" / "config.resolved.json").read_text())["log_dir"] == str(tmp_path / "tb")
    main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"])
    assert json.loads((tmp_path / "run" / "results.json").read_text())["runs"] == runs


def test_train_generator_log_dir(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tiny_folder(tmp_path / "images")
    main(["train-generator", "--out", str(tmp_path / "gen"), "--dataset", "folder", "--root", str(folder),
          "--profile", "linear", "--n-min", "3", "--steps", "4", "--device", "cpu", "--log-dir", str(tmp_path / "tb"),
          "--config", json.dumps({"block_out_channels": [8, 16], "num_train_timesteps": 8, "batch_size": 8})])
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"generator/loss", "generator/lr"} <= set(events.Tags()["scalars"])
    history = json.loads((tmp_path / "gen" / "generator.json").read_text())["history"]
    assert [e.step for e in events.Scalars("generator/loss")] == [r["step"] for r in history] == [4]


def test_a_missing_tensorboard_is_one_line(tmp_path, monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    config = experiment_config(tmp_path, methods=["none"], seeds=[0])
    with pytest.raises(SystemExit) as done:
        main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu",
              "--log-dir", str(tmp_path / "tb")])
    err = capfd.readouterr().err.strip()
    assert done.value.code == 2 and "\n" not in err and "pip install 'diffbalance[tensorboard]'" in err
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "tb").exists()
