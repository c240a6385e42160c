"""Bad inputs found by probing the newer options: each is one line, exit 2, and nothing written."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config, tiny_folder  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.data.imageset import ImageSet  # noqa: E402
from diffbalance.generate.cfg.config import CFGTrainConfig  # noqa: E402
from diffbalance.generate.cfg.train import train_generator  # noqa: E402
from diffbalance.infra.paths import inside, plain_name  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402


def one_line_error(capsys, args) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/abs", "..\\x"])
def test_names_that_become_folders_must_be_plain(name):
    with pytest.raises(DiffbalanceError, match="cannot be a folder name"):
        plain_name(name, "profile")


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "cfg").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DiffbalanceError, match="outside"):
        inside(tmp_path / "out", "cfg", "method")
    assert inside(tmp_path / "out", "fine", "method") == tmp_path / "out" / "fine"


@pytest.mark.parametrize("where", ["profile", "method"])
def test_a_profile_or_method_named_dotdot_writes_nothing_outside(tmp_path, capsys, where):
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    if where == "profile":
        cfg["profiles"] = [{"name": "..", "imbalance": {"profile": "linear", "n_min": 3}}]
    else:
        cfg["methods"] = ["none", {"name": "..", "rebalancer": "oversample"}]
    config.write_text(yaml.safe_dump(cfg))
    line = one_line_error(capsys, ["run", str(config), "--out", str(tmp_path / "a" / "out"), "--device", "cpu"])
    assert "cannot be a folder name" in line and not (tmp_path / "a").exists()


def test_a_method_folder_linked_out_of_the_run_is_refused_before_work(tmp_path, capsys):
    config = tiny_config(tmp_path, methods=["none", "oversample"])
    out = tmp_path / "out"
    (out / "fills").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "fills" / "oversample").symlink_to(tmp_path / "elsewhere")
    line = one_line_error(capsys, ["run", str(config), "--out", str(out), "--device", "cpu"])
    assert "symbolic link" in line and not any((tmp_path / "elsewhere").iterdir())
    assert not (out / "config.resolved.json").exists()


def test_a_cfg_checkpoint_for_other_data_writes_nothing(tmp_path, capsys):
    folder = tiny_folder(tmp_path / "images", per_class=(12, 5, 3))
    two = ImageSet(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 0, 0, 1, 1]), ("a", "b"))
    gen = tmp_path / "gen"
    train_generator(two, CFGTrainConfig(block_out_channels=(8, 16), train_steps=2, batch_size=4,
                                        checkpoint_every_steps=0), gen, "cpu", progress=False)
    args = ["rebalance", str(folder), "--method", "cfg", "--image-size", "8", "--device", "cpu",
            "--params", json.dumps({"checkpoint": str(gen), "num_inference_steps": 2, "sampler": "ddim"})]
    line = one_line_error(capsys, [*args, "--out", str(tmp_path / "fill")])
    assert "trained for 2 classes" in line and not (tmp_path / "fill").exists()


def test_an_unknown_sweep_train_key_fails_when_the_config_is_read(tmp_path, capsys):
    config = tiny_config(tmp_path, methods=["none", {"name": "c", "rebalancer": "cfg"}], validation={"per_class": 1},
                         sweep={"method": "c", "train": {"epochz": 2}})
    line = one_line_error(capsys, ["run", str(config), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert "sweep[0].train" in line and "epochz" in line and not (tmp_path / "out").exists()


def test_a_study_checks_every_profile_before_the_first_runs(tmp_path, capsys):
    config = tiny_config(tmp_path, methods=["none"])
    cfg = yaml.safe_load(config.read_text())
    cfg["profiles"] = [{"name": "good"}, {"name": "bad", "data": {**cfg["data"], "root": str(tmp_path / "missing")}}]
    config.write_text(yaml.safe_dump(cfg))
    line = one_line_error(capsys, ["run", str(config), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert "does not exist" in line
    assert not (tmp_path / "out" / "good" / "results.json").exists()  # the first profile did not run


def test_fid_json_to_an_unwritable_place_fails_before_computing(tmp_path, capsys):
    folder = tiny_folder(tmp_path / "images")
    line = one_line_error(capsys, ["fid", str(folder), str(folder), "--features", "random", "--json", "/proc/x.json"])
    assert "--json /proc/x.json cannot be written" in line


def test_run_refuses_a_fill_folder_and_rebalance_a_run_folder(tmp_path, capsys):
    folder = tiny_folder(tmp_path / "images", per_class=(12, 5, 3))
    fill_out = tmp_path / "fill"
    main(["rebalance", str(folder), "--method", "oversample", "--image-size", "8", "--out", str(fill_out)])
    capsys.readouterr()
    before = sorted(p.name for p in fill_out.iterdir())
    line = one_line_error(capsys, ["run", str(tiny_config(tmp_path)), "--out", str(fill_out), "--device", "cpu"])
    assert "is a fill folder" in line and sorted(p.name for p in fill_out.iterdir()) == before
    run_out = tmp_path / "run"
    run_out.mkdir()
    (run_out / "config.resolved.json").write_text("{}")
    line = one_line_error(capsys, ["rebalance", str(folder), "--method", "oversample", "--image-size", "8",
                                   "--out", str(run_out)])
    assert "is a run folder" in line and sorted(os.listdir(run_out)) == ["config.resolved.json"]


def test_rebalance_none_says_it_adds_nothing_by_design(tmp_path, capsys):
    folder = tiny_folder(tmp_path / "images", per_class=(12, 5, 3))
    main(["rebalance", str(folder), "--method", "none", "--image-size", "8", "--out", str(tmp_path / "out")])
    out = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "method 'none' adds no images (sampling_strategy 'auto' asks for 16 more)" in out
    assert "already meets" not in out and not (tmp_path / "out").exists()
