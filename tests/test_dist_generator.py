"""DDP training of the CFG generator: two CPU processes over gloo (torch.multiprocessing.spawn, the variables
torchrun would set) against one process, on a tiny UNet. The global batch and the draws do not depend on the world
size, so the weights agree to float round-off; a checkpoint written by two processes resumes in one; rank 0 alone
writes; an error on rank 0 while writing reaches rank 1 instead of leaving it waiting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from dist_helpers import free_port, join_gloo
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.train import train_generator

# (16, 32) channels: two per GroupNorm group. With one per group a conv bias just before a norm has a gradient of
# exactly 0 in exact arithmetic, and AdamW turns its round-off into whole ±lr steps that differ between any two
# summation orders (world sizes, thread counts)
TINY = dict(block_out_channels=(16, 32), num_train_timesteps=8, batch_size=8, checkpoint_every_steps=2, train_steps=4,
            lr=1e-3, warmup_steps=1)
FP32 = 1e-6  # two half-batch means averaged by DDP vs one whole-batch mean: the same weights up to round-off ...
WORST = 1e-4  # ... except a few elements whose gradient is near 0 (AdamW steps lr·g/(|g| + ε) there), still ≪ lr


def toy_set(n: int = 20) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 3, ("a", "b", "c"))


def _rank(rank: int, port: int, root: str) -> None:
    """One process of a 2-process job (the environment torchrun would give it), running every scenario in turn."""
    from diffbalance.infra import distributed
    from diffbalance.generate.cfg import train as train_module

    device = join_gloo(rank, 2, port)
    out: dict = {"world_size": distributed.current().world_size}
    try:
        try:  # a global batch of 7 does not split over 2 processes
            train_generator(toy_set(), CFGTrainConfig(**{**TINY, "batch_size": 7}), Path(root) / "odd", device, False)
        except DiffbalanceError as err:
            out["odd_batch"] = str(err)

        writes: list[str] = []  # what this rank wrote
        for name in ("_check_or_write_config", "_save_checkpoint", "save_generator"):
            real = getattr(train_module, name)
            setattr(train_module, name, lambda *a, _real=real, _name=name: writes.append(_name) or _real(*a))
        out["returned"] = str(train_generator(toy_set(), CFGTrainConfig(**TINY), Path(root) / "w2", device, False))
        out["writes"] = list(writes)

        def failing_save(*args):  # rank 0 cannot write its checkpoint
            raise DiffbalanceError("cannot write checkpoint-2 (disk on fire)", "put the fire out")

        train_module._save_checkpoint = failing_save
        try:
            train_generator(toy_set(), CFGTrainConfig(**TINY), Path(root) / "fail", device, False)
        except DiffbalanceError as err:
            out["failed"] = [type(err).__name__, str(err)]
    finally:
        distributed.shutdown()
    Path(root, f"rank{rank}.json").write_text(json.dumps(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Folders of the same run trained by 2 processes and by 1, and what each rank reported."""
    root = tmp_path_factory.mktemp("dist")
    mp.spawn(_rank, args=(free_port(), str(root)), nprocs=2, join=True)
    train_generator(toy_set(), CFGTrainConfig(**TINY), root / "w1", "cpu", progress=False)
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in range(2)]
    return root, ranks


def tensors(folder: Path, step: int) -> dict[str, torch.Tensor]:
    """model.* and ema.* of checkpoint-<step>, and unet.* of the folder's final EMA UNet (when there is one)."""
    out = load_file(folder / f"checkpoint-{step}" / "train_state" / "state.safetensors")
    final = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if final.is_file():
        out.update({f"unet.{k}": v for k, v in load_file(final).items()})
    return {k: v for k, v in out.items() if not k.startswith("optimizer.")}


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b) and any(k.startswith("model.") for k in a) and any(k.startswith("ema.") for k in a)
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert (diff > FP32).float().mean() < 1e-3, f"{int((diff > FP32).sum())} of {len(diff)} weights differ"
    assert diff.max() < WORST, f"weights differ by up to {diff.max():.2e}"


def test_two_processes_train_the_same_weights_as_one(runs):
    root, ranks = runs
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["returned"] == ranks[1]["returned"] == str(root / "w2")
    for step in (2, 4):
        assert_close(tensors(root / "w2", step), tensors(root / "w1", step))


def test_rank_zero_alone_writes_each_file_once(runs):
    root, ranks = runs
    checkpoint = ["_save_checkpoint", "save_generator"]  # a checkpoint holds a pipeline folder of its own
    assert ranks[0]["writes"] == ["_check_or_write_config", *checkpoint, *checkpoint, "save_generator"]
    assert ranks[1]["writes"] == []
    assert sorted(p.name for p in (root / "w2").iterdir()) == sorted(p.name for p in (root / "w1").iterdir())
    assert json.loads((root / "w2" / "train_config.json").read_text()) == \
        json.loads((root / "w1" / "train_config.json").read_text())


def test_a_two_process_checkpoint_resumes_in_one_process(runs, tmp_path):
    root, _ = runs
    cut = shutil.copytree(root / "w2", tmp_path / "cut")  # as if killed after checkpoint-2
    for name in ("model_index.json", "generator.json", "unet", "scheduler", "checkpoint-4"):
        path = cut / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    train_generator(toy_set(), CFGTrainConfig(**TINY), cut, "cpu", progress=False)
    assert_close(tensors(cut, 4), tensors(root / "w2", 4))
    assert_close(tensors(cut, 4), tensors(root / "w1", 4))


def test_an_uneven_batch_is_one_line_on_every_rank(runs):
    root, ranks = runs
    for r in ranks:
        assert "global batch of 7 does not split evenly over 2 processes" in r["odd_batch"]
        assert "\n" not in r["odd_batch"]
    assert not (root / "odd").exists()  # refused before anything was written


def test_a_write_error_on_rank_zero_reaches_rank_one(runs):
    _, ranks = runs
    line = "cannot write checkpoint-2 (disk on fire) — fix: put the fire out"
    assert ranks[0]["failed"] == ["DiffbalanceError", line] and ranks[1]["failed"] == ["PeerFailed", line]
