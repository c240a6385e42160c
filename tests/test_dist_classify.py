"""Data-parallel classifier training on two CPU processes (gloo): the same weights as one process, checkpoints written
by rank 0 alone and resumable at another world size, one-line errors on every rank.

One `torch.multiprocessing` start of two ranks runs every case (starting processes is the slow part); each rank saves
what it got, and the tests below compare it with runs of this process (world size 1). The exact comparisons use a
BN-free model built only here (standard DDP normalises each rank's slice with its own batch statistics)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import diffbalance.classify.train as train_mod
from dist_helpers import free_port, join_gloo
from diffbalance.infra import distributed
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError

WORLD = 2
BASE = dict(epochs=2, batch_size=16, lr=0.05, warmup_epochs=0.5, eval_batch_size=64, random_crop_padding=1)
CASES = {  # the same global batch at world size 1 and 2
    "plain": dict(random_crop_padding=0, horizontal_flip=False),
    # crop + flip + cutout, generated images weigh ¼, then a head re-trained on every rank
    "augmented_weighted": dict(synthetic_weight=0.25, cutout=3, head_retrain_epochs=1),
    "mixed_ema": dict(batch_mix="mixup_or_cutmix", synthetic_weight=0.5, loss="balanced_softmax",
                      label_smoothing=0.1, ema_decay=0.9),
}
STORED = dict(cutout=3, synthetic_weight=0.25)  # crop (padding 1) + flip + cutout, weighted: reads a share per rank
RESUMED = dict(batch_mix="cutmix", synthetic_weight=0.5)  # interrupted at world 2 after epoch 1, resumed at world 1
CLOSE = dict(rtol=1e-5, atol=1e-6)  # fp32: DDP sums the gradient in another order (seen: 5e-8; a wrong Σw: 2e-4)


class TinyNet(nn.Module):
    """conv(4)-ReLU-GAP-linear: no batch norm, so a DDP step is the one-process step up to fp32 rounding."""

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.head = nn.Linear(4, num_classes)
        self.feature_dim = 4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))  # (N, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def tiny_net(name: str, num_classes: int, in_channels: int, **backbone_options) -> nn.Module:
    return TinyNet(num_classes, in_channels)


def real_and_fills() -> tuple[ImageSet, torch.Tensor]:
    """64 images 3×8×8 of 2 classes (dark / bright), the last 16 marked generated."""
    g = torch.Generator().manual_seed(0)
    labels = (torch.arange(64) % 3 == 0).long()
    base = torch.where(labels == 1, 170, 50)[:, None, None, None]
    images = (base + torch.randint(0, 60, (64, 3, 8, 8), generator=g)).to(torch.uint8)
    return ImageSet(images, labels, ("dark", "bright")), torch.arange(64) >= 48


def weights(clf) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in clf.model.state_dict().items()}


def train(changes: dict, **kwargs):
    data, synthetic = real_and_fills()
    return train_classifier(data, TrainConfig(**{**BASE, **changes}), seed=0, progress=False, synthetic=synthetic,
                            **kwargs)


class _Stop(Exception):
    """Stands for a killed job."""


def _rank(rank: int, port: int, out: str) -> None:
    """One rank of the job: every case, its results saved to out/rank<r>.pt."""
    device = join_gloo(rank, WORLD, port)  # two ranks on two cores, one thread each
    assert distributed.current().world_size == WORLD
    real_builder = train_mod.build_classifier
    train_mod.build_classifier = tiny_net
    got: dict = {}
    for name, changes in CASES.items():
        got[name] = weights(train(changes, device=device))
    got["alone"] = weights(train(CASES["augmented_weighted"], device=device, ddp=False))
    got["stored_memory"] = weights(train(STORED, device=device))
    from diffbalance.data import store as store_mod
    from diffbalance.data.store_build import open_store

    real_read, lengths = store_mod.DiskArray.read, []
    store_mod.DiskArray.read = lambda self, rows: (lengths.append(len(rows)), real_read(self, rows))[1]
    stored = open_store(Path(out) / "store")
    _, synthetic = real_and_fills()
    for workers in ("0", "1"):  # in this process (reads counted), then one loader worker
        os.environ["DIFFBALANCE_LOADER_WORKERS"] = workers
        got[f"stored_{workers}"] = weights(train_classifier(stored, TrainConfig(**{**BASE, **STORED}), seed=0,
                                                            progress=False, synthetic=synthetic, device=device))
        if workers == "0":
            got["read_lengths"] = list(lengths)
    store_mod.DiskArray.read = real_read
    os.environ.pop("DIFFBALANCE_LOADER_WORKERS")

    saves = []
    real_save, real_epoch = train_mod.save_training_state, train_mod._train_one_epoch
    def stop_in_epoch_2(run, epoch, *args):
        if epoch == 1:
            raise _Stop
        real_epoch(run, epoch, *args)

    train_mod.save_training_state = lambda *a, **k: (saves.append(rank), real_save(*a, **k))
    train_mod._train_one_epoch = stop_in_epoch_2
    try:
        train(RESUMED, device=device, checkpoint_dir=Path(out) / "ckpt")
    except _Stop:
        pass
    train_mod.save_training_state, train_mod._train_one_epoch = real_save, real_epoch
    got["saves"] = saves

    errors = {}
    for name, changes in {"odd_batch": dict(batch_size=15), "sync_bn": dict(sync_batchnorm=True)}.items():
        try:
            train(changes, device=device)
        except DiffbalanceError as err:
            errors[name] = str(err)
    got["errors"] = errors

    train_mod.build_classifier = real_builder  # batch norm: per-rank statistics, but one model on every rank
    got["bn"] = weights(train({"model": "small_cnn", "epochs": 1}, device=device))
    torch.save(got, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("ddp")
    from diffbalance.data.store_build import write_store

    write_store(out / "store", real_and_fills()[0])  # the same images on disk (data.store), for the STORED case
    # fork, not spawn: the ranks inherit this process's imports (torch, torchvision) and start in a blink; each sets
    # one intra-op thread before any work, so the parent's thread pools do not matter
    mp.start_processes(_rank, args=(free_port(), str(out)), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)], out


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(train_mod, "build_classifier", tiny_net)


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **CLOSE, msg=k)


def assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_train_the_weights_of_one_process(ranks, tiny, case):
    (r0, r1), _ = ranks
    alone = weights(train(CASES[case], device="cpu"))
    assert_equal(r0[case], r1[case])  # every rank returns the same model
    assert_close(r0[case], alone)
    data, _ = real_and_fills()
    initial = train_mod._build_run(data, TrainConfig(**{**BASE, **CASES[case]}), torch.device("cpu"), seed=0).model
    assert (r0[case]["head.weight"] - initial.head.weight).abs().max() > 1e-3  # it trained


def test_ddp_false_trains_alone_inside_the_group(ranks, tiny):
    (r0, r1), _ = ranks
    alone = weights(train(CASES["augmented_weighted"], device="cpu"))
    assert_close(r0["alone"], alone)
    assert_close(r1["alone"], alone)


def test_rank0_alone_writes_the_checkpoint_and_it_resumes_at_world_size_1(ranks, tiny):
    (r0, r1), out = ranks
    assert r0["saves"] == [0] and r1["saves"] == []  # epoch 1 written once, by rank 0
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["resume"]  # no half-written copies beside it
    resumed = weights(train(RESUMED, device="cpu", checkpoint_dir=out / "ckpt"))
    assert_close(resumed, weights(train(RESUMED, device="cpu")))


def test_errors_are_one_line_on_every_rank(ranks):
    (r0, r1), _ = ranks
    assert r0["errors"] == r1["errors"] and set(r0["errors"]) == {"odd_batch", "sync_bn"}
    assert "does not split evenly over 2 processes" in r0["errors"]["odd_batch"]
    assert "sync_batchnorm needs CUDA" in r0["errors"]["sync_bn"]
    assert all("\n" not in e for e in r0["errors"].values())


def test_batch_norm_model_is_the_same_on_every_rank(ranks):
    (r0, r1), _ = ranks
    assert_equal(r0["bn"], r1["bn"])  # rank 0's running statistics handed to every rank
    assert all(torch.isfinite(v.float()).all() for v in r0["bn"].values())


def test_two_ranks_on_a_stored_set_read_their_share_and_train_the_same_weights(ranks):
    """Over an on-disk store each rank reads only its half of every batch (the crop, flip and cutout draws of the
    whole batch applied to its rows): the same weights as the in-memory DDP run, at 0 and 1 loader workers."""
    (r0, r1), _ = ranks
    for r in (r0, r1):
        assert_equal(r["stored_0"], r["stored_memory"])
        assert_equal(r["stored_1"], r["stored_memory"])
    steps = BASE["epochs"] * (64 // BASE["batch_size"])
    for r in (r0, r1):
        assert r["read_lengths"].count(BASE["batch_size"] // WORLD) == steps  # every step: this rank's 8 of 16
        assert BASE["batch_size"] not in r["read_lengths"]  # never a whole batch
