"""The one error path: a bug is one line naming a log file that holds the traceback (exit 1); --debug prints it."""

import re

import pytest

from diffbalance.cli.main import main


@pytest.fixture
def broken_presets(monkeypatch):
    def boom(name):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr("diffbalance.experiment.config.preset_text", boom)


def test_an_internal_error_is_one_line_with_a_log_file(broken_presets, capfd, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as done:
        main(["presets", "demo"])
    err = capfd.readouterr().err.strip()
    assert done.value.code == 1 and "\n" not in err and "Traceback" not in err
    assert err.startswith("error: internal error (RuntimeError: something inside broke)") and "--debug" in err
    log = re.search(r"traceback is in (\S+)", err).group(1)
    assert log.startswith(str(tmp_path / "cache" / "logs"))
    text = open(log).read()
    assert "Traceback" in text and "something inside broke" in text and "presets demo" in text


def test_debug_prints_the_traceback(broken_presets, capfd):
    with pytest.raises(SystemExit) as done:
        main(["presets", "demo", "--debug"])
    err = capfd.readouterr().err
    assert done.value.code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_usage_errors_are_one_line_exit_2(capfd):
    for argv in (["run", "--nope"], ["frobnicate"], ["fid", "a"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        err = capfd.readouterr().err.strip()
        assert done.value.code == 2 and "\n" not in err and err.startswith("error: ") and "--help" in err


def test_help_still_works(capfd):
    try:
        main(["run", "--help"])
    except SystemExit as done:  # click may end --help with exit 0
        assert done.code in (0, None)
    assert "--out" in capfd.readouterr().out


def test_help_and_console_print_user_text_as_written(capfd):
    """No emoji codes anywhere rich prints user text: ":train:" is one, and the help's example must stay the
    command one types (it printed as "cifar10🚋linear=500")."""
    from diffbalance.infra.progress import console

    try:
        main(["rebalance", "--help"])
    except SystemExit as done:
        assert done.code in (0, None)
    out = capfd.readouterr().out
    assert "cifar10:train:linear=500" in out and "\U0001f68b" not in out
    with console.capture() as printed:
        console.print("[bold]fill[/] cifar10:train:linear=500")
    assert printed.get().strip() == "fill cifar10:train:linear=500"


@pytest.mark.parametrize("option, value, problem, fix", [
    ("--params", "{alpha: 1}", "--params is not valid JSON", """quote it, e.g. '{"alpha": 0.6}'"""),
    ("--params", "[1]", "--params must be a JSON object", """pass e.g. '{"alpha": 0.6}'"""),
    ("--sampling-strategy", "{dark: 9}", "--sampling-strategy is not valid JSON", """quote it, e.g. '{"cat": 5000}'"""),
])
def test_a_bad_json_option_is_one_line_naming_that_option(tmp_path, capfd, option, value, problem, fix):
    with pytest.raises(SystemExit) as done:
        main(["rebalance", str(tmp_path), "--method", "mixup", "--out", str(tmp_path / "out"), option, value])
    err = capfd.readouterr().err.strip()
    assert done.value.code == 2 and "\n" not in err
    assert err.startswith(f"error: {problem}") and err.endswith(f" — fix: {fix}")


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capfd):
    """Ctrl-C anywhere in a command: the 'interrupted' line and the shell's status 130, never a silent 0 (newer Typer
    turns the KeyboardInterrupt into a returned exit code)."""
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr("diffbalance.experiment.config.preset_text", interrupted)
    with pytest.raises(SystemExit) as done:
        main(["presets", "demo"])
    err = capfd.readouterr().err.strip()
    assert done.value.code == 130 and err.startswith("interrupted: outputs written so far are complete")


def test_a_real_sigint_stops_a_run_with_130(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from test_experiment import tiny_config

    config = tiny_config(tmp_path, train={"epochs": 500, "batch_size": 8, "lr": 0.05})  # long enough to interrupt
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "diffbalance", "run", str(config), "--device", "cpu", "--quiet",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # until the first classifier is training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
