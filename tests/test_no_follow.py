"""Nothing diffbalance writes in place follows a planted symbolic link out of its output folder (issue 26): the lock
and the manifest a fill appends to are refused in one line, and the link's target is left as it was."""

import os

import pytest
import torch

from diffbalance.cli.main import main
from diffbalance.data.image_folder import write_image_folder
from diffbalance.data.imageset import ImageSet


def tiny_data(root):
    images = torch.randint(0, 255, (9, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    write_image_folder(ImageSet(images, torch.tensor([0] * 6 + [1] * 3), ("a", "b")), root)
    return root


def planted_link(tmp_path, out_name: str, name: str):
    """(data folder, victim file, output folder holding `name` as a link to the victim)."""
    data = tiny_data(tmp_path / "data")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / out_name
    out.mkdir()
    os.symlink(victim, out / name)
    return data, victim, out


@pytest.mark.parametrize("planted", [".diffbalance.lock", "manifest.jsonl"])
def test_a_planted_link_is_refused_and_its_target_untouched(tmp_path, capsys, planted):
    data, victim, out = planted_link(tmp_path, "fills", planted)
    code = None
    try:
        main(["rebalance", str(data), "--method", "oversample", "--out", str(out), "--image-size", "8"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "is a symbolic link" in err and len(err.strip().splitlines()) == 1
    assert victim.read_text() == "precious\n"  # neither truncated, nor given a pid or manifest lines


@pytest.mark.parametrize("spec", ["cifar10:train:linear=nan", "cifar10:train:linear=inf", "cifar10:train:linear=0",
                                  "cifar10:train:exponential=-3", "cifar10:train:step=inf", "cifar10:train:linear=2.5"])
def test_profile_values_must_be_positive_finite_numbers(spec):
    from diffbalance.imbalance.specs import parse_dataset_spec
    from diffbalance.infra.errors import DiffbalanceError

    with pytest.raises(DiffbalanceError, match="positive finite|whole number") as err:
        parse_dataset_spec(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("section", [{"seconds": float("inf"), "cpu_img_s": 2900}, {"seconds": 300, "cpu_img_s": float("nan")},
                                     {"seconds": 300, "cpu_img_s": float("inf")}])
def test_expected_time_must_be_finite(section):
    from diffbalance.experiment.speed import ExpectedTime
    from diffbalance.infra.errors import DiffbalanceError

    with pytest.raises(DiffbalanceError, match="finite"):
        ExpectedTime.from_dict(section, path="expected_time")


def test_an_infinite_ratio_is_refused():
    from diffbalance.imbalance.subset import ImbalanceConfig
    from diffbalance.infra.errors import DiffbalanceError

    with pytest.raises(DiffbalanceError, match="finite"):
        ImbalanceConfig.from_dict({"profile": "exponential", "ratio": float("inf")})


@pytest.mark.parametrize("command", ["rebalance", "adapt"])
def test_out_inside_the_data_folder_is_refused_before_anything_is_written(tmp_path, capsys, command):
    data = tiny_data(tmp_path / "data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    args = ([command, str(data), "--method", "oversample", "--out", str(data / "fill"), "--image-size", "8"]
            if command == "rebalance" else [command, str(data), "--out", str(data / "adapter")])
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is inside the data folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing written into it


def test_an_unwritable_log_dir_fails_before_any_work(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiment import tiny_config

    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = tiny_config(tmp_path, methods=["oversample"], seeds=[0], train={"epochs": 1, "batch_size": 8})
    out = tmp_path / "run"
    for args in (["run", str(config), "--out", str(out), "--quiet", "--log-dir", str(blocker / "logs")],
                 ["train-generator", "--dataset", "folder", "--root", str(tmp_path / "images"), "--out",
                  str(tmp_path / "gen"), "--steps", "1", "--log-dir", str(blocker / "logs")]):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and "log folder" in err and "--log-dir" in err, err
        assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "gen").exists()  # nothing trained, nothing written


def test_a_class_folder_planted_as_a_link_leaves_out_as_it_was(tmp_path, capsys):
    data = tiny_data(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "fills"
    out.mkdir()
    os.symlink(elsewhere, out / "b")  # the class folder of 'b', pointing out of OUT
    with pytest.raises(SystemExit) as e:
        main(["rebalance", str(data), "--method", "oversample", "--out", str(out), "--image-size", "8"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "leads outside" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["b"] and not list(elsewhere.iterdir())  # no lock, no command.json


def test_lora_metadata_is_written_in_one_order_in_every_process():
    """peft's target_modules is a set; its order changes with the process's string hashing, and diffusers wrote it
    as it came — the same weights, other file bytes. `ordered` sorts it first."""
    import json
    import subprocess
    import sys

    from diffbalance.generate.adapt.lora import ordered

    assert ordered({"r": 4, "target_modules": {"to_v", "to_k", "to_q"}, "x": [{"b", "a"}]}) == {
        "r": 4, "target_modules": ["to_k", "to_q", "to_v"], "x": [["a", "b"]]}
    code = ("import json; from diffbalance.generate.adapt.lora import ordered; "
            "print(json.dumps(ordered({'target_modules': {'to_q', 'to_k', 'to_v', 'to_out.0', 'proj_in'}})))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3, 4)}
    assert len(outs) == 1 and json.loads(outs.pop())["target_modules"][0] == "proj_in"


@pytest.mark.parametrize("root", ["/proc", "/proc/self"])
def test_proc_as_a_folder_root_is_one_line(tmp_path, capsys, root):
    with pytest.raises(SystemExit) as e:
        main(["rebalance", root, "--method", "oversample", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_an_unlistable_class_folder_is_one_line(tmp_path, monkeypatch):
    from pathlib import Path

    from diffbalance.data.image_folder import scan_image_folder
    from diffbalance.infra.errors import DiffbalanceError

    data = tiny_data(tmp_path / "data")
    real = Path.iterdir

    def refuse(self):
        if self.name == "b":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(DiffbalanceError, match="cannot be listed"):
        scan_image_folder(data)


def test_the_launchers_error_file_keeps_diffbalances_exit_status(tmp_path, monkeypatch, capsys):
    import json

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    with pytest.raises(SystemExit) as e:
        main(["rebalance", str(tmp_path / "missing"), "--method", "oversample", "--out", str(tmp_path / "o")])
    record = json.loads(error_file.read_text())["message"]
    assert e.value.code == 2 and record["errorCode"] == 2 and record["extraInfo"]["diffbalance_exit_status"] == "2"
    assert record["message"] == capsys.readouterr().err.strip()  # the one line the user saw


@pytest.mark.parametrize("name", ["fill.json", "classes.json", "command.json", "complete.json"])
def test_a_linked_or_damaged_record_never_writes_through(tmp_path, capsys, name):
    data, victim, out = planted_link(tmp_path, "out", name)
    try:
        main(["rebalance", str(data), "--method", "oversample", "--out", str(out), "--image-size", "8"])
        code = 0
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert victim.read_text() == "precious\n"
    if name == "fill.json":  # the header is read first: refused in one line
        assert code == 2 and "symbolic link" in err
    else:  # written by a rename, which replaces the link itself
        assert code == 0 and not (out / name).is_symlink()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "fill.json").write_text("not json")
    with pytest.raises(SystemExit) as e:
        main(["rebalance", str(data), "--method", "oversample", "--out", str(tmp_path / "junk"), "--image-size", "8"])
    assert e.value.code == 2 and "is damaged" in capsys.readouterr().err


def test_a_planted_lock_link_stops_run_and_train_generator_too(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiment import tiny_config

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    config = tiny_config(tmp_path, methods=["oversample"], seeds=[0], train={"epochs": 1, "batch_size": 8})
    for command, out in ((["run", str(config), "--quiet"], tmp_path / "run"),
                         (["train-generator", "--dataset", "folder", "--root", str(tmp_path / "images"), "--steps", "1"],
                          tmp_path / "gen")):
        out.mkdir()
        os.symlink(victim, out / ".diffbalance.lock")
        with pytest.raises(SystemExit) as e:
            main([*command, "--out", str(out)])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]  # (run prints its stage lines)
        assert e.value.code == 2 and len(errors) == 1 and "is a symbolic link" in errors[0]
        assert victim.read_text() == "precious\n"
