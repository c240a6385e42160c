"""`torchrun -m diffbalance run` on the CPU (gloo): 2 processes give the runs of 1, rank 0 alone reports, and a
bad config stops every rank with one error line instead of a hang."""

import json

import yaml

from dist_helpers import torchrun
from test_experiment import tiny_config

IGNORED = ("train_seconds", "device")  # wall time and the thread count differ between launches


def runs_of(out):
    runs = json.loads((out / "results.json").read_text())["runs"]
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in runs]


def test_run_spread_over_two_ranks_matches_one(tmp_path):
    config = tiny_config(tmp_path, methods=["none", "oversample", "mixup"], seeds=[0, 1], parallel="runs")
    args = ["run", str(config), "--device", "cpu", "--quiet"]
    one = torchrun(1, *args, "--out", str(tmp_path / "one"))
    two = torchrun(2, *args, "--out", str(tmp_path / "two"))
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert runs_of(tmp_path / "two") == runs_of(tmp_path / "one")  # same runs, same numbers, same order
    assert not list((tmp_path / "two" / "runs").glob("*.json"))  # gathered into results.json
    assert two.stdout.count("Test accuracy") == 1  # rank 0 alone prints the tables
    assert json.loads((tmp_path / "two" / "results.json").read_text())["stage_seconds"]["classifiers"] > 0


def test_a_bad_config_stops_every_rank_with_one_line(tmp_path):
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["imbalance"] = {"profile": "zigzag"}
    config.write_text(yaml.safe_dump(cfg))
    done = torchrun(2, "run", str(config), "--device", "cpu", "--quiet", "--out", str(tmp_path / "out"), timeout=120)
    ours = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0
    assert ours and all("unknown profile 'zigzag'" in line for line in ours), done.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # nothing written
