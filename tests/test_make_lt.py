"""`diffbalance make-lt` end to end on tiny data: folders, counts.json, validation, nothing left on failure."""

from __future__ import annotations

import json

import pytest
import typer
from fixtures_data import isolated_data_env, write_fashion_idx, write_image_tree  # noqa: F401 (fixture)
from typer.testing import CliRunner

from diffbalance.cli.make_lt import make_lt_command
from diffbalance.data.image_folder import load_image_folder
from diffbalance.infra.errors import DiffbalanceError


def _cli() -> typer.Typer:
    """The command on its own app (with a callback, so `make-lt` stays a subcommand as in `diffbalance`)."""
    test_app = typer.Typer(pretty_exceptions_enable=False)
    test_app.callback()(lambda: None)
    test_app.command("make-lt")(make_lt_command)
    return test_app


def _run(*args: str):
    return CliRunner().invoke(_cli(), ["make-lt", *args])


def test_folder_dataset_linear_end_to_end(tmp_path, isolated_data_env):
    write_image_tree(tmp_path / "tr", {"a": 4, "b": 4, "c": 4}, size=(6, 6))
    write_image_tree(tmp_path / "te", {"a": 2, "b": 2, "c": 2}, size=(6, 6))
    out = tmp_path / "lt"
    result = _run("--dataset", "folder", "--root", str(tmp_path / "tr"), "--test-root", str(tmp_path / "te"),
                  "--image-size", "6", "--profile", "linear", "--n-min", "1", "--order", "c,1,0", "--out", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "counts.json").read_text())
    assert record["train_counts"] == [3, 2, 1] and record["test_count"] == 6
    assert record["class_names"] == ["a", "b", "c"] and record["params"]["order"] == [2, 1, 0]
    assert load_image_folder(out / "train", image_size=6).counts() == [3, 2, 1]
    assert load_image_folder(out / "test", image_size=6).counts() == [2, 2, 2]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_fashion_mnist_exponential_keeps_class_names(tmp_path, isolated_data_env):
    write_fashion_idx(tmp_path / "fm", n_train=100, n_test=20)
    out = tmp_path / "lt"
    result = _run("--root", str(tmp_path / "fm"), "--profile", "exponential", "--ratio", "10", "--out", str(out),
                  "--selection", "random", "--seed", "1", "--no-download")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "counts.json").read_text())
    assert record["dataset"] == "fashion-mnist" and record["train_counts"][0] == 1 and record["train_counts"][9] == 10
    back = load_image_folder(out / "train", image_size=28, channels=1)
    assert back.class_names[0] == "T-shirt/top" and back.counts() == record["train_counts"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "zigzag"], "unknown profile"),
        (["--profile", "linear", "--ratio", "5"], "do not apply"),
        (["--profile", "step", "--n-min", "5"], "does not apply"),
        (["--profile", "step", "--ratio", "0.5"], "below 1"),
        (["--profile", "linear", "--selection", "best"], "unknown selection"),
        (["--profile", "linear", "--order", "1,,2"], "empty item"),
        (["--profile", "linear", "--dataset", "mnist"], "unknown dataset"),
        (["--profile", "linear", "--n-min", "100"], "only"),
        (["--profile", "linear", "--order", "b,x"], "unknown class"),
    ],
)
def test_bad_options_are_one_line_errors_and_leave_no_output(tmp_path, isolated_data_env, args, message):
    write_image_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(4, 4))
    out = tmp_path / "lt"
    result = _run("--dataset", "folder", "--root", str(tmp_path / "d"), "--image-size", "4", "--out", str(out), *args)
    assert isinstance(result.exception, DiffbalanceError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


def test_failure_while_writing_leaves_no_folder(tmp_path, isolated_data_env, monkeypatch):
    write_image_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(4, 4))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("diffbalance.imbalance.export.write_json", broken)
    result = _run("--dataset", "folder", "--root", str(tmp_path / "d"), "--image-size", "4", "--profile", "linear",
                  "--out", str(tmp_path / "lt"))
    assert isinstance(result.exception, OSError)
    assert not (tmp_path / "lt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_existing_output_needs_overwrite(tmp_path, isolated_data_env):
    write_image_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(4, 4))
    out = tmp_path / "lt"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    base = ["--dataset", "folder", "--root", str(tmp_path / "d"), "--image-size", "4", "--profile", "linear"]
    base += ["--out", str(out)]
    result = _run(*base)
    assert isinstance(result.exception, DiffbalanceError) and (out / "keep.txt").exists()
    assert _run(*base, "--overwrite").exit_code == 0 and not (out / "keep.txt").exists()


def test_main_prints_one_line_and_exits_2(tmp_path, isolated_data_env, capsys):
    from diffbalance.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["make-lt", "--profile", "zigzag", "--out", str(tmp_path / "lt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown profile") and "\n" not in err
