"""The expected wall time a run prints at its start: the machine probe, the scaling, the config key, the CLI line."""

import json
import math

import pytest
import yaml

from diffbalance.cli.main import main
from diffbalance.experiment.config import ExperimentConfig, preset_text
from diffbalance.experiment import speed
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.experiment.speed import ExpectedTime, classifier_img_s, expected_seconds, expected_time_line
from test_experiment import tiny_config


def test_time_scales_with_the_inverse_of_the_speed():
    assert expected_seconds(600, 1_000, 2_000) == pytest.approx(300)  # twice as fast: half the time
    assert expected_seconds(600, 1_000, 500) == pytest.approx(1_200)
    t = ExpectedTime(seconds=420, cpu_img_s=2_400)
    assert t.expected(1_200) == pytest.approx(840)


def test_the_line_states_the_expectation_and_its_source():
    line = expected_time_line([ExpectedTime(seconds=420, cpu_img_s=2_400)], 1_200)
    assert line.startswith("expected time: about 14 min on this machine (1,200 img/s")
    assert "measured 7.0 min at 2,400 img/s" in line
    study = expected_time_line([ExpectedTime(seconds=60, cpu_img_s=1_000), ExpectedTime(seconds=120, cpu_img_s=1_000)],
                               1_000)
    assert "about 3.0 min" in study and "1.0 min at 1,000 img/s; 2.0 min at 1,000 img/s" in study


@pytest.mark.parametrize("bad", [{"seconds": 0, "cpu_img_s": 1}, {"seconds": 5, "cpu_img_s": -1}])
def test_bad_values_are_one_line_errors(bad):
    with pytest.raises(DiffbalanceError, match="seconds|cpu_img_s"):
        ExpectedTime.from_dict(bad)


def test_the_probe_measures_a_finite_speed():
    img_s = classifier_img_s(images=256, batch=64)
    assert math.isfinite(img_s) and img_s > 0


def test_the_demo_states_its_measured_time():
    demo = ExperimentConfig.from_dict(yaml.safe_load(preset_text("demo")))
    assert demo.expected_time is not None and demo.expected_time.seconds > 0 and demo.expected_time.cpu_img_s > 0


def test_cli_prints_the_expected_time_and_the_value_changes_no_result(tmp_path, capsys, monkeypatch):
    probed = []
    monkeypatch.setattr(speed, "classifier_img_s", lambda: probed.append(1) or 1_000.0)
    config = tiny_config(tmp_path, methods=["none"], seeds=[0], expected_time={"seconds": 90, "cpu_img_s": 2_000})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert probed == [1] and "expected time: about 3.0 min on this machine (1,000 img/s" in printed
    assert printed.index("expected time") < printed.index("Test accuracy")  # at the start
    first = json.loads((out / "results.json").read_text())["runs"]
    # a new measurement in the config keeps the finished runs (like the log dir, it changes no result)
    cfg = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**cfg, "expected_time": {"seconds": 45, "cpu_img_s": 2_000}}))
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    assert json.loads((out / "results.json").read_text())["runs"] == first
    assert "about 1.5 min" in capsys.readouterr().out


def test_no_probe_without_a_stated_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(speed, "classifier_img_s", lambda: pytest.fail("probed without expected_time"))
    main(["run", str(tiny_config(tmp_path, methods=["none"], seeds=[0])), "--out", str(tmp_path / "run"), "--quiet",
          "--device", "cpu"])
    assert "expected time" not in capsys.readouterr().out
