"""Valid but unusual input works: nothing to add is a clean no-op, one epoch trains, a single class is fine."""

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_data import write_image_tree  # noqa: E402
from test_experiment import tiny_config, tiny_folder  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402


def run(argv) -> int:
    try:
        main(argv)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


@pytest.mark.parametrize("method, per_class", [
    ("none", (12, 6, 3)),  # the identity sampler: nothing to make whatever the target
    ("mixup", (5, 5, 5)),  # already balanced
    ("cutmix", (7,)),  # a single class
])
def test_nothing_to_add_is_a_clean_no_op(tmp_path, capfd, method, per_class):
    if len(per_class) == 1:
        folder = tmp_path / "images"
        write_image_tree(folder, {"solo": per_class[0]}, size=(8, 8))
    else:
        folder = tiny_folder(tmp_path / "images", per_class=per_class)
    out = tmp_path / "out"
    assert run(["rebalance", str(folder), "--method", method, "--out", str(out), "--image-size", "8"]) == 0
    captured = capfd.readouterr()
    assert "nothing to add" in captured.err + captured.out
    assert "0 images of 8×8 written" in captured.out
    assert not out.exists()  # nothing was there, nothing is written


def test_one_epoch_with_default_warmup_trains(tmp_path):
    config = tiny_config(tmp_path, methods=["none"], seeds=[0], train={"epochs": 1, "batch_size": 8})
    assert run(["run", str(config), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]) == 0
    assert (tmp_path / "run" / "report.md").is_file()


def test_lock_and_temp_names_are_not_left_in_a_finished_run(tmp_path):
    config = tiny_config(tmp_path, methods=["none", "mixup"], seeds=[0], train={"epochs": 1, "batch_size": 8})
    out = tmp_path / "run"
    assert run(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    cfg = yaml.safe_load(config.read_text())
    assert cfg["train"]["epochs"] == 1
