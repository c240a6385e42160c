"""Kill -9 trials shared by tests/test_crash.py (fast tier) and tests/test_crash_slow.py (slow tier).

A trial starts the real CLI (`python -m diffbalance ...`) in a subprocess, waits until its output folder shows
progress, sleeps a fraction of the command's remaining work drawn from `random.Random(seed)`, sends SIGKILL, then
runs the SAME command again to the end and compares the folder with an uninterrupted reference run of that command:
exit code 0, the same files, exact counts, manifest == PNGs on disk, every image pixel-identical, generator and
classifier weights bit-identical, results.json identical but for timing, and no temporary name left anywhere.

The kill moment is `fraction × window`, where the fraction comes from the seed and the window is how long the
reference run took from first progress to its last output; every assertion message carries the seed and the moment.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_data import DATA_ENV_VARS, write_image_tree  # noqa: E402
from test_experiment import tiny_folder  # noqa: E402

TEMP_MARK = ".tmp"  # every temporary name holds it (diffbalance.infra.atomic.TEMP_MARK)
TIMING_KEYS = ("train_seconds", "stage_seconds", "invocations", "seconds")  # fields that measure time, not outcome
POLL_S = 0.005
COMMAND_TIMEOUT_S = 300


@dataclass(frozen=True)
class Command:
    """One CLI invocation, `python -m diffbalance <args>`, where "{out}" in `args` is the output folder."""

    name: str
    args: tuple[str, ...]
    progressed: Callable[[Path], bool]  # true once the output folder shows work worth interrupting
    finished: Callable[[Path], bool]  # true once the command's last output is in place
    cwd: Path

    def argv(self, out: Path) -> list[str]:
        return [sys.executable, "-m", "diffbalance", *(a.replace("{out}", str(out)) for a in self.args)]


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run of a command: its folder, and how long it took from first progress to its last output
    (the window a kill moment is drawn from)."""

    out: Path
    window_s: float


@dataclass(frozen=True)
class Kill:
    """What a kill trial did, for assertion messages."""

    command: str
    seed: int
    fraction: float
    delay_s: float
    window_s: float
    killed: bool  # False: the command had already finished when its moment came
    temps_at_kill: tuple[str, ...]  # temporary names present right after the kill (a write was cut)
    state_at_kill: str  # how far it had come (progress_summary)

    def __str__(self) -> str:
        what = "SIGKILL" if self.killed else "no kill (finished first)"
        cut = f", cut writes: {', '.join(self.temps_at_kill)}" if self.temps_at_kill else ""
        return (f"[{self.command} seed {self.seed}: {what} {self.delay_s:.3f} s after first progress "
                f"(fraction {self.fraction:.3f} of a {self.window_s:.3f} s window); done: {self.state_at_kill}{cut}]")


def cli_env(cache: Path) -> dict[str, str]:
    """The environment of every CLI run: one thread, the cache in the test's folder, no dataset env vars."""
    env = {k: v for k, v in os.environ.items() if k not in DATA_ENV_VARS}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DIFFBALANCE_CACHE=str(cache), PYTHONUNBUFFERED="1")
    return env


def start(cmd: Command, out: Path, env: dict[str, str]) -> subprocess.Popen:
    log = out.parent / f"{out.name}.log"
    with open(log, "ab") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(cmd.argv(out), cwd=cmd.cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)


def log_tail(out: Path, lines: int = 15) -> str:
    log = out.parent / f"{out.name}.log"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def wait_for(proc: subprocess.Popen, cmd: Command, out: Path, seen: Callable[[Path], bool]) -> float:
    """Poll until `seen(out)` or the process ends; returns the moment (time.monotonic)."""
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while not seen(out) and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{cmd.name} made no progress in {COMMAND_TIMEOUT_S} s:\n{log_tail(out)}")
        time.sleep(POLL_S)
    return time.monotonic()


def finish(proc: subprocess.Popen, cmd: Command, out: Path, context: str = "") -> None:
    try:
        rc = proc.wait(COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{context} {cmd.name} did not finish in {COMMAND_TIMEOUT_S} s") from None
    assert rc == 0, f"{context} {cmd.name} exited {rc}:\n{log_tail(out)}"


def run_reference(cmd: Command, out: Path, env: dict[str, str]) -> Reference:
    """Run `cmd` to its end, uninterrupted; measures the window a kill may fall in."""
    proc = start(cmd, out, env)
    progressed_at = wait_for(proc, cmd, out, cmd.progressed)
    finished_at = wait_for(proc, cmd, out, cmd.finished)
    finish(proc, cmd, out, "reference")
    return Reference(out, finished_at - progressed_at)


def kill_at_random(cmd: Command, out: Path, env: dict[str, str], seed: int, window_s: float) -> Kill:
    """Start `cmd`, wait for progress, SIGKILL it `fraction × window_s` later (fraction from the seed and the
    command's name, so one seed falls at different moments of different commands)."""
    fraction = random.Random(f"{cmd.name}/{seed}").random()
    delay_s = fraction * window_s
    proc = start(cmd, out, env)
    progressed_at = wait_for(proc, cmd, out, cmd.progressed)
    while proc.poll() is None and time.monotonic() < progressed_at + delay_s:
        time.sleep(min(POLL_S, max(0.0, progressed_at + delay_s - time.monotonic())))
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not killed:
        assert proc.returncode == 0, f"{cmd.name} failed before its kill:\n{log_tail(out)}"
    return Kill(cmd.name, seed, fraction, delay_s, window_s, killed, tuple(temp_leftovers(out)),
                progress_summary(out))


def resume(cmd: Command, out: Path, env: dict[str, str], kill: Kill) -> None:
    """Run the same command again to its end."""
    finish(start(cmd, out, env), cmd, out, f"{kill} resumed:")


def progress_summary(out: Path) -> str:
    """Fill images recorded, generator checkpoints, classifier epochs checkpointed, runs in results.json."""
    parts = []
    for manifest in sorted(out.rglob("manifest.jsonl")):
        lines = manifest.read_bytes().count(b"\n")
        parts.append(f"{manifest.parent.relative_to(out)}: {lines} images")
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    if steps:
        parts.append(f"checkpoints {steps}")
    for state in sorted(out.glob("checkpoints/*/resume/state.json")):
        parts.append(f"{state.parts[-3]}: epoch {json.loads(state.read_text())['epoch']}")
    if (out / "results.json").exists():
        parts.append(f"{len(json.loads((out / 'results.json').read_text())['runs'])} runs in results.json")
    if (out / "report.md").exists():
        parts.append("report.md")
    return ", ".join(parts) or "nothing yet"


# --- what a finished folder must look like ---------------------------------------------------------------------
def temp_leftovers(folder: Path) -> list[str]:
    """Relative paths of every file or folder under `folder` whose name holds ".tmp"."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if TEMP_MARK in p.name)


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file() and not p.name.endswith(".log")}


def manifest_records(fill_dir: Path, context: str) -> list[dict]:
    """Every manifest line, each whole JSON (a resumed fill leaves no cut line behind)."""
    path = fill_dir / "manifest.jsonl"
    text = path.read_text() if path.exists() else ""
    assert not text or text.endswith("\n"), f"{context} {path} ends in a cut line"
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{context} {path} line {n} is not JSON: {line[:80]!r}") from None
    return records


def assert_manifest_matches_disk(fill_dir: Path, context: str) -> list[dict]:
    """The manifest's records, after checking that no (class, index) is there twice and that manifest entries and
    the PNGs on disk are the same files (no orphan PNG, none missing)."""
    records = manifest_records(fill_dir, context)
    keys = [(r["class_index"], r["index"]) for r in records]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    assert not twice, f"{context} {fill_dir}: (class, index) recorded twice: {twice[:5]}"
    on_disk = {str(p.relative_to(fill_dir)) for p in fill_dir.glob("*/*.png")}
    listed = {r["file"] for r in records}
    assert on_disk == listed, (f"{context} {fill_dir}: PNGs without a manifest line {sorted(on_disk - listed)[:5]}, "
                               f"manifest lines without a PNG {sorted(listed - on_disk)[:5]}")
    return records


def fill_pixels(fill_dir: Path, context: str) -> dict[tuple[int, int], np.ndarray]:
    """(class, index) → decoded pixels of a finished fill folder, after checking the manifest against the disk and
    the counts against what fill.json asked for (and complete.json reports)."""
    records = assert_manifest_matches_disk(fill_dir, context)
    header = json.loads((fill_dir / "fill.json").read_text())
    counts = [sum(1 for r in records if r["class_index"] == k) for k in range(len(header["class_names"]))]
    assert counts == header["images_to_add"], f"{context} {fill_dir}: {counts} images per class, asked {header}"
    complete = json.loads((fill_dir / "complete.json").read_text())
    assert complete["present_per_class"] == counts, f"{context} {fill_dir}: complete.json says {complete}"
    return {(r["class_index"], r["index"]): np.asarray(Image.open(fill_dir / r["file"])) for r in records}


def assert_same_fill(reference: Path, resumed: Path, context: str) -> None:
    want, got = fill_pixels(reference, "reference"), fill_pixels(resumed, context)
    assert sorted(got) == sorted(want), f"{context} {resumed}: other (class, index) than the reference"
    differ = [k for k in want if not np.array_equal(want[k], got[k])]
    assert not differ, f"{context} {resumed}: {len(differ)} images differ from the reference, e.g. {differ[:3]}"


def assert_same_tensors(reference: Path, resumed: Path, context: str) -> None:
    want, got = load_file(str(reference)), load_file(str(resumed))
    assert sorted(got) == sorted(want), f"{context} {resumed}: other tensors than {reference}"
    differ = [k for k in want if not torch.equal(want[k], got[k])]
    assert not differ, f"{context} {resumed}: {len(differ)} tensors differ bitwise from the reference: {differ[:3]}"


def assert_clean_and_complete(reference: Path, resumed: Path, context: str) -> None:
    """No temporary name left, and exactly the reference's files (nothing missing, nothing stale)."""
    left = temp_leftovers(resumed)
    assert not left, f"{context} temporary files left in {resumed}: {left}"
    want, got = files(reference), files(resumed)
    assert got == want, f"{context} {resumed}: missing {sorted(want - got)[:5]}, extra {sorted(got - want)[:5]}"


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def differences(want, got, at: str = "") -> list[str]:
    """Where two JSON values differ (key paths, at most 5)."""
    if isinstance(want, dict) and isinstance(got, dict):
        found = [f"{at}.{k}: only in {'reference' if k in want else 'resumed'}" for k in set(want) ^ set(got)]
        for k in sorted(set(want) & set(got)):
            found += differences(want[k], got[k], f"{at}.{k}")
        return found[:5]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in differences(w, g, f"{at}[{i}]")][:5]
    return [] if want == got else [f"{at}: {str(want)[:60]} != {str(got)[:60]}"]


def check_rebalance(reference: Path, resumed: Path, kill: Kill) -> None:
    assert_clean_and_complete(reference, resumed, str(kill))
    assert_same_fill(reference, resumed, str(kill))


def check_generator(reference: Path, resumed: Path, kill: Kill) -> None:
    assert_clean_and_complete(reference, resumed, str(kill))
    weights = Path("unet") / "diffusion_pytorch_model.safetensors"
    assert_same_tensors(reference / weights, resumed / weights, str(kill))
    for name in ("generator.json", "train_config.json"):
        assert json.loads((resumed / name).read_text()) == json.loads((reference / name).read_text()), f"{kill} {name}"
    for state in sorted(reference.glob("checkpoint-*/train_state/state.safetensors")):
        assert_same_tensors(state, resumed / state.relative_to(reference), str(kill))


def check_run(reference: Path, resumed: Path, kill: Kill) -> None:
    assert_clean_and_complete(reference, resumed, str(kill))
    want = without_timing(json.loads((reference / "results.json").read_text()))
    got = without_timing(json.loads((resumed / "results.json").read_text()))
    assert got == want, f"{kill} results.json differs from the reference (timing aside): {differences(want, got)}"
    for fill_dir in sorted((reference / "fills").iterdir()):
        if (fill_dir / "manifest.jsonl").exists():
            assert_same_fill(fill_dir, resumed / "fills" / fill_dir.name, str(kill))
    for state in sorted(reference.glob("checkpoints/*/resume/state.safetensors")):
        assert_same_tensors(state, resumed / state.relative_to(reference), str(kill))


# --- the commands and their tiny data --------------------------------------------------------------------------
def manifest_has_lines(fill_dir: Path) -> Callable[[Path], bool]:
    def progressed(out: Path) -> bool:
        path = out / fill_dir
        return path.is_file() and path.stat().st_size > 0
    return progressed


def rebalance_command(root: Path, method: str, fill_per_class: int) -> Command:
    """`rebalance` of a 3-class 16×16 folder up to `fill_per_class` images in the two small classes."""
    images = root / "images"
    if not images.exists():
        write_image_tree(images, {"a": 40, "b": 10, "c": 5}, size=(16, 16))
    target = json.dumps({"b": fill_per_class, "c": fill_per_class})
    args = ("rebalance", str(images), "--method", method, "--out", "{out}", "--sampling-strategy", target, "--image-size", "16",
            "--seed", "7", "--device", "cpu")
    return Command(f"rebalance {method}", args, manifest_has_lines(Path("manifest.jsonl")),
                   lambda out: (out / "complete.json").is_file(), root)


def train_generator_command(root: Path, steps: int) -> Command:
    """`train-generator`: a tiny UNet on a 3-class 8×8 folder, a checkpoint every 2 steps (2 kept)."""
    images = root / "gen-images"
    if not images.exists():
        write_image_tree(images, {"a": 12, "b": 6, "c": 4}, size=(8, 8), seed=1)
    config = json.dumps({"block_out_channels": [8, 16], "layers_per_block": 1, "checkpoint_every_steps": 2,
                         "batch_size": 4, "num_train_timesteps": 50})
    args = ("train-generator", "--out", "{out}", "--dataset", "folder", "--root", str(images), "--profile", "none",
            "--config", config, "--steps", str(steps), "--device", "cpu")
    return Command("train-generator", args, lambda out: any(out.glob("checkpoint-*")),
                   lambda out: (out / "model_index.json").is_file(), root)


def run_config(root: Path, name: str, methods: list, seeds: list[int], epochs: int, per_class: int) -> Path:
    """A tiny `run` config (8×8 images, small_cnn, a classifier checkpoint every epoch)."""
    images = root / f"{name}-images"
    if not images.exists():
        tiny_folder(images, per_class=(per_class,) * 3)
    cfg = {
        "name": name,
        "data": {"name": "folder", "root": str(images), "image_size": 8, "test_fraction": 0.25, "cache": False},
        "imbalance": {"profile": "linear", "n_min": 3},
        "methods": methods,
        "classifiers": ["small_cnn"],
        "train": {"epochs": epochs, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0.5, "checkpoint_every_epochs": 1},
        "seeds": seeds,
        "consistency": False,
        "device": "cpu",
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_command(root: Path, name: str, config: Path, progressed: Callable[[Path], bool],
                finished: Callable[[Path], bool]) -> Command:
    return Command(name, ("run", str(config), "--out", "{out}", "--quiet"), progressed, finished, root)


def classifier_run_command(root: Path, epochs: int) -> Command:
    """`run` with one identity method: the kill falls in classifier training, between its first checkpoint and
    the result it adds to results.json."""
    config = run_config(root, "classifier", ["none"], [0], epochs, per_class=60)
    return run_command(root, "run (classifier training)", config,
                       lambda out: any(out.glob("checkpoints/*/resume/state.json")),
                       lambda out: (out / "results.json").is_file())


def whole_run_command(root: Path, seeds: list[int]) -> Command:
    """`run` with fills and classifiers; the kill falls anywhere between the resolved config (its stages have
    begun) and report.md (its last output)."""
    config = run_config(root, "whole", ["none", "oversample", "mixup", "cutmix"], seeds, 3, per_class=16)
    return run_command(root, "run (whole)", config, lambda out: (out / "config.resolved.json").is_file(),
                       lambda out: (out / "report.md").is_file())
