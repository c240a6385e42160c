"""Kill -9 trials, many of them (slow tier: `pytest -m slow tests/test_crash_slow.py`, a few minutes on 2 cores).

Six kill moments per command — `rebalance` (oversample, mixup and cutmix fills), `train-generator`, classifier
training inside `run`, and `run` as a whole — each followed by the same command run again to the end and compared
with one uninterrupted reference run per command (tests/crash_helpers.py says what is compared). Plus two
processes on one --out: a long `rebalance` keeps its folder while a second one is refused.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import crash_helpers as ch  # noqa: E402

pytestmark = pytest.mark.slow

SEEDS = range(100, 106)  # six kill moments per command
FILLS = ("oversample", "mixup", "cutmix")


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("crash-slow")
    return root, ch.cli_env(root / "cache")


@pytest.fixture(scope="module")
def references(crash_dir):
    """name → Reference, each command's uninterrupted run made once for the module (on first use)."""
    root, env = crash_dir
    made: dict[str, ch.Reference] = {}

    def reference(cmd: ch.Command) -> ch.Reference:
        if cmd.name not in made:
            made[cmd.name] = ch.run_reference(cmd, root / f"reference-{len(made)}", env)
        return made[cmd.name]

    return reference


KILLS: list[ch.Kill] = []


def _trial(crash_dir, references, cmd: ch.Command, seed: int, check) -> None:
    root, env = crash_dir
    reference = references(cmd)
    out = root / f"killed-{len(KILLS)}"
    kill = ch.kill_at_random(cmd, out, env, seed, reference.window_s)
    KILLS.append(kill)
    ch.resume(cmd, out, env, kill)
    check(reference.out, out, kill)
    print(kill)


@pytest.mark.parametrize("seed", SEEDS)
def test_rebalance_killed_and_resumed(crash_dir, references, seed):
    method = FILLS[seed % len(FILLS)]
    _trial(crash_dir, references, ch.rebalance_command(crash_dir[0], method, 3000), seed, ch.check_rebalance)


@pytest.mark.parametrize("seed", SEEDS)
def test_train_generator_killed_and_resumed(crash_dir, references, seed):
    _trial(crash_dir, references, ch.train_generator_command(crash_dir[0], 30), seed, ch.check_generator)


@pytest.mark.parametrize("seed", SEEDS)
def test_classifier_training_in_run_killed_and_resumed(crash_dir, references, seed):
    _trial(crash_dir, references, ch.classifier_run_command(crash_dir[0], 150), seed, ch.check_run)


@pytest.mark.parametrize("seed", SEEDS)
def test_run_killed_and_resumed(crash_dir, references, seed):
    _trial(crash_dir, references, ch.whole_run_command(crash_dir[0], [0, 1]), seed, ch.check_run)


def test_most_trials_killed_mid_work():
    """The kill moments fell inside the work (a command that finished first only shows an idempotent rerun)."""
    if len(KILLS) < 8:
        pytest.skip("run with the trials above")
    killed = sum(k.killed for k in KILLS)
    assert killed >= 0.75 * len(KILLS), "\n".join(map(str, KILLS))


def test_second_rebalance_on_the_same_out_is_refused_and_the_first_finishes(crash_dir):
    root, env = crash_dir
    cmd = ch.rebalance_command(root, "oversample", 12000)
    out = root / "locked"
    first = ch.start(cmd, out, env)
    ch.wait_for(first, cmd, out, cmd.progressed)
    second = subprocess.run(cmd.argv(out), cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"another diffbalance process is writing to {out}" in lines[0], second.stderr
    assert first.poll() is None, "the first rebalance ended before the second was refused: make it longer"
    ch.finish(first, cmd, out, "the lock holder:")
    ch.fill_pixels(out, "the lock holder:")  # complete and consistent
    assert ch.temp_leftovers(out) == []

    again = root / "locked-then-killed"  # SIGKILL frees the lock: the same command then runs
    holder = ch.start(cmd, again, env)
    ch.wait_for(holder, cmd, again, cmd.progressed)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    ch.finish(ch.start(cmd, again, env), cmd, again, "after the holder was killed:")
    ch.fill_pixels(again, "after the holder was killed:")
    assert ch.temp_leftovers(again) == []
