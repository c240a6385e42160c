"""`torchrun -m diffbalance run` on the CPU (gloo): 2 processes give the runs of 1, rank 0 alone reports, and a
bad config stops every rank with one error line instead of a hang."""

import json
import os
from pathlib import Path

import yaml

from dist_helpers import torchrun
from test_experiment import tiny_config

IGNORED = ("train_seconds", "device")  # wall time and the thread count differ between launches


def runs_of(out):
    runs = json.loads((out / "results.json").read_text())["runs"]
    return [{k: without_seconds(v) if k == "history" else v for k, v in r.items() if k not in IGNORED} for r in runs]


def without_seconds(history: list[dict]) -> list[dict]:
    """A training curve without its wall-clock seconds per epoch."""
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


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
    assert len(ours) == 1 and "unknown profile 'zigzag'" in ours[0], done.stderr[-2000:]  # rank 0 says it once
    assert "traceback : error: unknown profile 'zigzag'" in done.stderr  # torchrun's summary names the problem
    assert not (tmp_path / "out").exists()  # nothing written


def test_rebalance_under_accelerate_launch_matches_one_process(tmp_path):
    import shutil
    import subprocess
    import sys

    from test_experiment import tiny_folder

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    folder = tiny_folder(tmp_path / "images", per_class=(12, 5, 3))
    args = ["rebalance", str(folder), "--method", "cutmix", "--device", "cpu", "--image-size", "8"]
    # --multi_gpu is accelerate's torchrun launcher; with --device cpu the ranks join over gloo
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffbalance"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*launch, *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env,
                         timeout=240)
    one = subprocess.run([sys.executable, "-m", "diffbalance", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "command.json").read_text())["world_size"] == 2
    skip = {"command.json", ".diffbalance.lock"}  # the launch's own record, and the lock holder's pid
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))  # noqa: E731
                          if p.is_file() and p.name not in skip}
    assert files(tmp_path / "two") == files(tmp_path / "one")


def test_a_stored_folder_under_torchrun_gives_the_in_memory_fill_and_epoch(tmp_path):
    """Two ranks through the torchrun binary with the folder kept on disk (DIFFBALANCE_STORE=disk), each reading
    its part of every batch (parallel: ddp): the fill's PNGs byte for byte and one classifier epoch's numbers equal
    those of the same launch with the folder in memory."""
    config = tiny_config(tmp_path, methods=["oversample"], seeds=[0], parallel="ddp",
                         train={"epochs": 1, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0})
    args = ["run", str(config), "--device", "cpu", "--quiet"]
    memory = torchrun(2, *args, "--out", str(tmp_path / "memory"), env={"DIFFBALANCE_STORE": "memory"})
    disk = torchrun(2, *args, "--out", str(tmp_path / "disk"), env={"DIFFBALANCE_STORE": "disk"})
    assert memory.returncode == 0 and disk.returncode == 0, disk.stderr[-2000:]
    assert "kept on disk in an image store" in disk.stderr and "image store" not in memory.stderr
    assert runs_of(tmp_path / "disk") == runs_of(tmp_path / "memory")
    results = json.loads((tmp_path / "disk" / "results.json").read_text())
    assert (results["processes"], results["parallel"]) == (2, "ddp")  # one classifier trained over both ranks
    fills = lambda root: {p.relative_to(root).as_posix(): p.read_bytes()  # noqa: E731
                          for p in sorted((root / "fills").rglob("*.png"))}
    assert fills(tmp_path / "memory") and fills(tmp_path / "disk") == fills(tmp_path / "memory")
