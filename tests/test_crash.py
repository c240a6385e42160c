"""A failed or killed command leaves nothing behind and resumes exactly (fast tier; tests/test_crash_slow.py runs
the same trials with many more kill moments).

- kill -9: `rebalance`, `train-generator`, classifier training inside `run`, and `run` as a whole, each killed once
  at a seeded random moment and run again, must end exactly as an uninterrupted run (tests/crash_helpers.py);
- a full disk (ENOSPC / EDQUOT / EROFS) while writing a PNG, the manifest, a checkpoint or a JSON file is one
  `DiskFullError` line naming the file, leaves no partial file, and the same call resumes once there is room —
  with a writer made to fail, and on a real small tmpfs where the sandbox may mount one;
- every temporary name is ".<name>.tmp…", which `remove_stale_temps` removes; one process at a time per folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

sys.path.insert(0, str(Path(__file__).parent))
import crash_helpers as ch  # noqa: E402
from fixtures_data import write_image_tree  # noqa: E402

import diffbalance.infra.atomic as atomic  # noqa: E402
import diffbalance.infra.checkpoint as checkpoint  # noqa: E402
import diffbalance.generate.cfg.train as cfg_train  # noqa: E402
import diffbalance.rebalance.store as store  # noqa: E402
from diffbalance.infra.atomic import (DiskFullError, atomic_path, output_lock, remove_stale_temps,  # noqa: E402
                                write_json)
from diffbalance.classify.config import TrainConfig  # noqa: E402
from diffbalance.classify.train import train_classifier  # noqa: E402
from diffbalance.cli.main import main  # noqa: E402
from diffbalance.data.imageset import ImageSet  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402
from diffbalance.generate.cfg.config import CFGTrainConfig  # noqa: E402
from diffbalance.generate.cfg.train import train_generator  # noqa: E402
from diffbalance.rebalance.registry import build_rebalancer  # noqa: E402
from diffbalance.rebalance.store import fill, read_manifest  # noqa: E402

CPU = torch.device("cpu")
RESUME_FIX = "free space (or choose another --out), then run the same command again to resume"


# --- kill -9 and resume, one trial per command ------------------------------------------------------------------
@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("crash")
    return root, ch.cli_env(root / "cache")


def _trial(crash_dir, cmd: ch.Command, seed: int, check) -> None:
    root, env = crash_dir
    reference = ch.run_reference(cmd, root / f"{cmd.args[0]}-reference-{seed}", env)
    out = root / f"{cmd.args[0]}-killed-{seed}"
    kill = ch.kill_at_random(cmd, out, env, seed, reference.window_s)
    ch.resume(cmd, out, env, kill)
    check(reference.out, out, kill)
    print(kill)


def test_rebalance_killed_and_resumed(crash_dir):
    _trial(crash_dir, ch.rebalance_command(crash_dir[0], "mixup", 800), 1, ch.check_rebalance)


def test_train_generator_killed_and_resumed(crash_dir):
    _trial(crash_dir, ch.train_generator_command(crash_dir[0], 12), 2, ch.check_generator)


def test_classifier_training_in_run_killed_and_resumed(crash_dir):
    _trial(crash_dir, ch.classifier_run_command(crash_dir[0], 80), 3, ch.check_run)


def test_run_killed_and_resumed(crash_dir):
    _trial(crash_dir, ch.whole_run_command(crash_dir[0], [0]), 4, ch.check_run)


# --- one writer per folder --------------------------------------------------------------------------------------
HOLD_LOCK = """
import sys, time
from diffbalance.infra.atomic import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_second_writer_is_refused_and_a_killed_holder_frees_the_lock(tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    write_image_tree(images, {"a": 8, "b": 3})
    command = ["rebalance", str(images), "--method", "oversample", "--out", str(out), "--image-size", "8",
               "--device", "cpu"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        with pytest.raises(SystemExit) as refused:
            main(command)
        assert refused.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"another diffbalance process is writing to {out}" in err[0], err
        assert holder.poll() is None  # the holder is unaffected ...
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # ... and so is its folder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    main(command)  # SIGKILL released the lock: the next command runs
    assert read_manifest(out) and not ch.temp_leftovers(out)


def test_stale_temps_are_removed_and_nothing_else(tmp_path):
    temps = [".00003.png.tmp-41", ".checkpoint-4.tmp-41/unet/x.json", ".checkpoint-2.tmp-delete-41/a",
             "c/.resume.tmp-old-41/state.json", "b/.manifest.jsonl.tmp-7", ".write-probe.tmp-abc",
             "c/resume/.tmpX1b2C3"]  # the last: how safetensors (Rust tempfile) names its own temporary file
    kept = ["b/00001.png", ".work/gen/checkpoint-2/state.json", ".diffbalance.lock", "manifest.jsonl",
            "checkpoint-4/unet/x.json", "c/resume/state.json"]
    moved_aside = "d/.resume.tmp-old-41/state.json"  # killed between the renames of a folder replacement
    for name in temps + kept + [moved_aside]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    with output_lock(tmp_path):
        assert remove_stale_temps(tmp_path) == len(temps)
    assert ch.temp_leftovers(tmp_path) == []
    assert ch.files(tmp_path) == set(kept) | {"d/resume/state.json"}  # the old folder is put back
    assert (tmp_path / "d/resume/state.json").read_text() == moved_aside


def test_every_temporary_name_is_one_remove_stale_temps_finds(tmp_path, monkeypatch):
    """Every rename a write makes moves a temporary name (".<name>.tmp…") into place, or a final name out of the
    way to one: a fill, a classifier checkpoint, a generator run with checkpoints deleted behind it."""
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    data = _tiny_set()
    fill(_mixup(data), data, tmp_path / "fill", progress=False)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05)
    train_classifier(data, cfg, device=CPU, seed=0, checkpoint_dir=tmp_path / "clf", progress=False)
    gen = CFGTrainConfig(**{**TINY_GEN, "train_steps": 6, "keep_checkpoints": 1})
    train_generator(data, gen, tmp_path / "gen", CPU, progress=False)
    assert any(".tmp-delete" in dst for _, dst in renames) and any(".tmp-old" in dst for _, dst in renames)

    def temp(name):
        return name.startswith(".") and atomic.TEMP_MARK in name

    assert renames and all(temp(src) != temp(dst) for src, dst in renames), renames
    assert ch.temp_leftovers(tmp_path) == []


# --- a full disk ------------------------------------------------------------------------------------------------
def _tiny_set() -> ImageSet:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (18, 3, 8, 8), dtype=torch.uint8, generator=gen)
    return ImageSet(images, torch.tensor([0] * 10 + [1] * 5 + [2] * 3), ("a", "b", "c"), "tiny")


def _mixup(data: ImageSet, add=(0, 9, 12), batch_size: int = 4):
    strategy = {c: n + a for c, (n, a) in enumerate(zip(data.counts(), add)) if a}
    return build_rebalancer("mixup", {"sampling_strategy": strategy, "random_state": 5, "batch_size": batch_size})


@pytest.fixture
def reference_fill(tmp_path):
    data = _tiny_set()
    fill(_mixup(data), data, tmp_path / "reference", progress=False)
    return data, tmp_path / "reference"


def _assert_resumes_exactly(data, reference: Path, out: Path) -> None:
    fill(_mixup(data), data, out, progress=False)  # the same call, now with room
    assert ch.temp_leftovers(out) == []
    ch.assert_same_fill(reference, out, "resumed after a full disk:")


def _failing_png_writer(after: int, via_atomic_path: bool):
    """write_png that works `after` times, then fails as a full disk does: half a temporary file, then ENOSPC."""
    real = store.write_png
    calls = [0]

    def write(image, path):
        calls[0] += 1
        if calls[0] <= after:
            return real(image, path)
        if not via_atomic_path:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"\x89PNG\r\n\x1a\n half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    return write


@pytest.mark.parametrize("via_atomic_path", [True, False])
def test_disk_full_while_writing_a_png_is_one_line_and_resumes(reference_fill, tmp_path, monkeypatch,
                                                               via_atomic_path):
    data, reference = reference_fill
    out = tmp_path / "out"
    monkeypatch.setattr(store, "write_png", _failing_png_writer(6, via_atomic_path))
    with pytest.raises(DiffbalanceError) as failed:
        fill(_mixup(data), data, out, progress=False)
    message = str(failed.value)
    assert message.startswith(f"disk full while writing {out}/") and message.endswith(f".png — fix: {RESUME_FIX}")
    assert "\n" not in message
    assert ch.temp_leftovers(out) == []
    assert len(ch.assert_manifest_matches_disk(out, "after the full disk:")) == 6  # the finished ones, recorded
    assert not (out / "complete.json").exists()
    monkeypatch.undo()
    _assert_resumes_exactly(data, reference, out)


def test_disk_full_while_appending_the_manifest_rolls_back_line_and_image(reference_fill, tmp_path, monkeypatch):
    """The manifest line is cut back (no half line) and its PNG removed: manifest == PNGs, then an exact resume."""
    data, reference = reference_fill
    out = tmp_path / "out"
    real_write = os.write
    lines = [0]

    def write(fd, data_):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("manifest.jsonl"):
            return real_write(fd, data_)
        lines[0] += 1
        if lines[0] <= 5:
            return real_write(fd, data_)
        real_write(fd, bytes(data_[: len(data_) // 2]))  # half a line reached the disk, then it was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(DiskFullError, match=re.escape(f"disk full while writing {out / 'manifest.jsonl'}")):
        fill(_mixup(data), data, out, progress=False)
    monkeypatch.undo()
    assert len(ch.assert_manifest_matches_disk(out, "after the full disk:")) == 5
    assert ch.temp_leftovers(out) == []
    _assert_resumes_exactly(data, reference, out)


def test_a_cut_last_manifest_line_is_dropped_before_appending(reference_fill, tmp_path, monkeypatch):
    """A line cut short by a crash (a buffered write reached the disk in part) is not glued to the next one.
    (The old append-mode writer glued them: that image was lost and the resumed fill failed 'lacks 1 images'.)"""
    data, reference = reference_fill
    out = tmp_path / "out"
    monkeypatch.setattr(store, "write_png", _failing_png_writer(5, via_atomic_path=True))
    with pytest.raises(DiskFullError):
        fill(_mixup(data), data, out, progress=False)
    monkeypatch.undo()
    with open(out / "manifest.jsonl", "a") as manifest:
        manifest.write('{"class_index": 1, "index": 5, "se')
    _assert_resumes_exactly(data, reference, out)
    ch.manifest_records(out, "resumed:")  # every line whole


def test_full_disk_errors_are_one_line_naming_the_final_path(tmp_path):
    target = tmp_path / "results.json"
    for code, reason in [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk full (quota exceeded)"),
                         (errno.EROFS, "read-only file system")]:
        with pytest.raises(DiskFullError) as failed, atomic_path(target) as tmp:
            tmp.write_text("{")
            raise OSError(code, os.strerror(code))
        assert str(failed.value).startswith(f"{reason} while writing {target} — fix: ")
        assert "run the same command again to resume" in str(failed.value)
    expected = f"disk full while writing {tmp_path / 'ckpt'} — fix: {RESUME_FIX}"
    with pytest.raises(DiskFullError, match=re.escape(expected)):
        with atomic_path(tmp_path / "ckpt") as folder:  # nested: the error names the folder being written
            folder.mkdir()
            with atomic_path(folder / "state.safetensors"):
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    with pytest.raises(PermissionError), atomic_path(target):
        raise PermissionError(errno.EACCES, "denied")  # other errors pass through as they are
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_disk_full_while_writing_results_json(tmp_path, monkeypatch):
    def write_text(self, text):
        self.write_bytes(text.encode()[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(DiskFullError, match=re.escape(f"disk full while writing {tmp_path / 'results.json'}")):
        write_json(tmp_path / "results.json", {"runs": []})
    assert list(tmp_path.iterdir()) == []


def test_disk_full_at_a_classifier_checkpoint_resumes_to_the_same_weights(tmp_path, monkeypatch):
    data = _tiny_set()
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05)
    reference = train_classifier(data, cfg, device=CPU, seed=0, checkpoint_dir=tmp_path / "reference", progress=False)
    real_save, saves = checkpoint.save_file, [0]

    def save_file(tensors, path):
        saves[0] += 1
        if saves[0] == 2:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    with pytest.raises(DiskFullError, match=re.escape(f"disk full while writing {tmp_path / 'run' / 'resume'}")):
        train_classifier(data, cfg, device=CPU, seed=0, checkpoint_dir=tmp_path / "run", progress=False)
    assert ch.temp_leftovers(tmp_path / "run") == []
    assert checkpoint.load_training_state(tmp_path / "run" / "resume").meta["epoch"] == 1  # the last good one
    monkeypatch.undo()
    resumed = train_classifier(data, cfg, device=CPU, seed=0, checkpoint_dir=tmp_path / "run", progress=False)
    for (name, want), got in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(want, got), name


TINY_GEN = dict(block_out_channels=(8, 16), layers_per_block=1, num_train_timesteps=8, batch_size=4,
                checkpoint_every_steps=2, train_steps=4)


def _unet_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def _assert_same_weights(reference: Path, resumed: Path) -> None:
    want, got = _unet_weights(reference), _unet_weights(resumed)
    assert sorted(want) == sorted(got) and all(torch.equal(want[k], got[k]) for k in want)


def test_disk_full_at_a_generator_checkpoint_resumes_to_the_same_weights(tmp_path, monkeypatch):
    data, config = _tiny_set(), CFGTrainConfig(**TINY_GEN)
    train_generator(data, config, tmp_path / "reference", CPU, progress=False)
    real, calls = cfg_train.save_generator, [0]

    def save_generator(folder, *args):
        calls[0] += 1
        if calls[0] == 2:  # checkpoint-4, half written
            (Path(folder) / "unet").mkdir(parents=True)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(folder, *args)

    monkeypatch.setattr(cfg_train, "save_generator", save_generator)
    out = tmp_path / "run"
    expected = f"disk full while writing {out / 'checkpoint-4'} — fix: {RESUME_FIX}"
    with pytest.raises(DiskFullError, match=re.escape(expected)):
        train_generator(data, config, out, CPU, progress=False)
    assert ch.temp_leftovers(out) == [] and [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]
    monkeypatch.undo()
    train_generator(data, config, out, CPU, progress=False)
    _assert_same_weights(tmp_path / "reference", out)


# --- a real full disk: a small tmpfs (skipped where the sandbox cannot mount one) --------------------------------
@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounting needs root on Linux")
def test_fill_on_a_full_tmpfs_is_one_line_and_resumes_after_freeing_space(tmp_path):
    data = _tiny_set()
    add = (0, 30, 40)
    fill(_mixup(data, add), data, tmp_path / "reference", progress=False)
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        out = disk / "fill"
        with pytest.raises(DiskFullError) as failed:
            fill(_mixup(data, add), data, out, progress=False)
        message = str(failed.value)
        assert message.startswith(f"disk full while writing {out}/") and message.endswith(RESUME_FIX), message
        assert ch.temp_leftovers(out) == []
        assert 0 < len(ch.assert_manifest_matches_disk(out, "on the full tmpfs:")) < sum(add)
        remount(disk, "size=8m")  # space freed
        fill(_mixup(data, add), data, out, progress=False)
        assert ch.temp_leftovers(out) == []
        ch.assert_same_fill(tmp_path / "reference", out, "resumed on the grown tmpfs:")
        remount(disk, "ro")
        with pytest.raises(DiskFullError, match=re.escape(f"read-only file system while writing {disk / 'other'}")):
            fill(_mixup(data, (0, 31, 40)), data, disk / "other", progress=False)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounting needs root on Linux")
def test_generator_on_a_full_tmpfs_is_one_line_and_resumes_to_the_same_weights(tmp_path):
    data, config = _tiny_set(), CFGTrainConfig(**{**TINY_GEN, "train_steps": 6, "keep_checkpoints": 3})
    reference = train_generator(data, config, tmp_path / "reference", CPU, progress=False)
    checkpoint_bytes = sum(p.stat().st_size for p in (reference / "checkpoint-2").rglob("*") if p.is_file())
    with small_tmpfs(tmp_path / "disk", f"{int(checkpoint_bytes * 2.5) // 1024}k") as disk:
        out = disk / "gen"
        with pytest.raises(DiskFullError) as failed:
            train_generator(data, config, out, CPU, progress=False)
        assert str(failed.value).startswith(f"disk full while writing {out}/checkpoint-"), str(failed.value)
        assert ch.temp_leftovers(out) == []
        remount(disk, "size=64m")
        train_generator(data, config, out, CPU, progress=False)
        assert ch.temp_leftovers(out) == []
        _assert_same_weights(reference, out)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounting needs root on Linux")
def test_rebalance_command_on_a_full_tmpfs_is_one_line_exit_2_then_resumes(tmp_path, capsys):
    images = tmp_path / "images"
    write_image_tree(images, {"a": 40, "b": 4, "c": 2}, size=(8, 8))

    def rebalance(out: Path) -> None:
        main(["rebalance", str(images), "--method", "cutmix", "--out", str(out), "--image-size", "8",
              "--seed", "3", "--device", "cpu"])

    rebalance(tmp_path / "reference")
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        capsys.readouterr()
        with pytest.raises(SystemExit) as failed:
            rebalance(disk / "out")
        assert failed.value.code == 2
        stderr = capsys.readouterr().err
        err = [line for line in stderr.splitlines() if line.startswith("error:")]  # besides the progress bar
        assert len(err) == 1 and "Traceback" not in stderr, stderr
        assert err[0].startswith(f"error: disk full while writing {disk / 'out'}/") and err[0].endswith(RESUME_FIX)
        assert ch.temp_leftovers(disk / "out") == []
        remount(disk, "size=8m")
        rebalance(disk / "out")  # the same command, once there is room
        ch.assert_clean_and_complete(tmp_path / "reference", disk / "out", "resumed on the grown tmpfs:")
        ch.assert_same_fill(tmp_path / "reference", disk / "out", "resumed on the grown tmpfs:")


def test_checkpoint_tensors_leave_a_device_in_one_flat_copy():
    """The grouped path of a GPU checkpoint (run here on CPU tensors): same values and shapes, standard layout,
    no shared memory (safetensors refuses shared tensors)."""
    from diffbalance.infra.checkpoint import flat_to_cpu

    g = torch.Generator().manual_seed(0)
    conv = torch.randn(4, 3, 2, 2, generator=g).to(memory_format=torch.channels_last)
    group = [("conv", conv), ("bias", torch.randn(4, generator=g)), ("step", torch.tensor(7.0))]
    out = flat_to_cpu(group)
    assert list(out) == ["conv", "bias", "step"]
    for name, tensor in group:
        assert torch.equal(out[name], tensor) and out[name].shape == tensor.shape and out[name].is_contiguous()
    pointers = {t.untyped_storage().data_ptr() for t in out.values()}
    assert len(pointers) == 3
