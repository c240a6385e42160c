"""GPU tier (`pytest -m gpu`; skipped without CUDA): the fast path of classifier training — bf16 autocast,
channels_last, cudnn autotuning, torch.compile, random draws on the device — trains to a finite loss, never waits
for the GPU inside a step, and is seeded (the same seed gives the same weights up to GPU non-determinism)."""

import pytest
import torch

import diffbalance.classify.train as train_mod
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.step import train_step
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def tiny_set(n: int = 256) -> ImageSet:
    """4 classes of 3×16×16 images, each class a brightness level."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    images = (labels[:, None, None, None] * 50 + torch.randint(0, 50, (n, 3, 16, 16), generator=g)).to(torch.uint8)
    return ImageSet(images, labels, ("a", "b", "c", "d"))


def fast_config(**changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.5, bf16=True, channels_last=True, cutout=4)
    return TrainConfig(**{**base, **changes})


def test_compiled_bf16_channels_last_training_is_finite():
    data = tiny_set()
    cfg = fast_config(compile=True, batch_mix="mixup_or_cutmix", ema_decay=0.9)
    run = train_mod._build_run(data, cfg, torch.device("cuda"), seed=0)
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and torch.backends.cudnn.benchmark
    losses = torch.stack([train_step(run, torch.arange(64, device="cuda") + 64 * s, s) for s in range(3)])
    assert torch.isfinite(losses).all()
    clf = train_classifier(data, cfg, device="cuda", seed=0, progress=False)
    assert torch.isfinite(clf.logits(data.images)).all()


def test_a_training_step_never_syncs_with_the_host():
    data = tiny_set()
    cfg = fast_config(batch_mix="cutmix", synthetic_weight=0.5)
    synthetic = torch.arange(len(data)) % 3 == 0
    run = train_mod._build_run(data, cfg, torch.device("cuda"), seed=0, synthetic=synthetic)
    order = torch.randperm(len(data), device="cuda")
    train_step(run, order[:64], 0)  # cudnn autotuning and first-call work outside the check
    torch.cuda.synchronize()
    before = [p.detach().clone() for p in run.model.parameters()]
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside a step now raises a RuntimeError
    try:
        assert torch.cuda.get_sync_debug_mode() == 2
        losses = [train_step(run, order[64 * s : 64 * (s + 1)], s) for s in range(1, 4)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack(losses)).all()  # the steps ran and trained
    assert any(not torch.equal(a, p) for a, p in zip(before, run.model.parameters()))


def test_same_seed_same_weights_on_cuda():
    data = tiny_set()
    a, b = (train_classifier(data, fast_config(), device="cuda", seed=3, progress=False) for _ in range(2))
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=1e-2, atol=1e-3, msg=k)
    torch.testing.assert_close(a.logits(data.images), b.logits(data.images), rtol=1e-2, atol=1e-2)
