"""Images/s of diffbalance's classifier training step against a naive PyTorch loop: same model, same optimizer.

    python benchmarks/classifier.py [--device auto] [--model resnet18] [--batch 512] [--steps 50] [--image-size 32]
                                    [--data synthetic | CIFAR10_DIR] [--no-compile] [--workers 8] [--json FILE]

diffbalance: classify.train's own epoch loop (`_train_one_epoch`, one `classify.step.train_step` per batch) over
  uint8 images held on the device: crop/flip drawn on the device, normalisation by cached device tensors, and on
  CUDA bf16 autocast, channels_last, cudnn autotuning and torch.compile (unless --no-compile); no host sync inside
  the epoch (the loss is read back once, at its end).
naive: the PyTorch CIFAR tutorial's loop: a DataLoader over PIL images with torchvision transforms
  (RandomCrop(size, padding=4), RandomHorizontalFlip, ToTensor, Normalize), --workers processes, pinned memory on
  CUDA; the same model (freshly built) and SGD settings; fp32, NCHW; `loss.item()` every step.
Both run --warmup untimed steps first (compilation and cudnn autotuning happen there), then time --steps steps
--repeats times and keep the fastest (timeit's rule: slower repeats measure other processes, not the code).
Defaults: on CUDA resnet18, batch 512, 50 steps; on the CPU small_cnn, batch 128, 8 steps (well under two minutes
on two cores; there both paths are fp32 and compute-bound, so expect a ratio near 1, and on a shared machine
numbers that move with the other processes' load). Targets on one H100 (resnet18, 32×32, batch 512):
≥ 25,000 img/s and ≥ 3× the naive loop.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from diffbalance.classify import train as train_mod
from diffbalance.classify.augment import channel_mean_std
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.models import build_classifier
from diffbalance.classify.step import train_step
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import describe, resolve_device

NUM_CLASSES = 10
PADDING = 4  # RandomCrop padding on both paths (TrainConfig.random_crop_padding)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", help="a registered classifier (default: resnet18 on CUDA, small_cnn on the CPU)")
    ap.add_argument("--batch", type=int, help="images per step (default: 512 on CUDA, 128 on the CPU)")
    ap.add_argument("--steps", type=int, help="timed steps per path (default: 50 on CUDA, 8 on the CPU)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default: 10 on CUDA, 2 on the CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="timed windows of --steps steps per path; the best counts")
    ap.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    ap.add_argument("--data", default="synthetic", help="'synthetic' (random uint8) or a CIFAR-10 python folder")
    ap.add_argument("--no-compile", action="store_true", help="diffbalance without torch.compile (CUDA)")
    ap.add_argument("--workers", type=int, help="naive DataLoader workers (default: min(8, cores) on CUDA, 0 on CPU)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    model = args.model or ("resnet18" if cuda else "small_cnn")
    batch = args.batch or (512 if cuda else 128)
    steps = args.steps or (50 if cuda else 8)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if cuda else 0)
    repeats = args.repeats
    images = _images(args.data, args.image_size, batch * (warmup + steps * repeats))

    config = TrainConfig(model=model, epochs=1 + repeats + warmup // steps, batch_size=batch, lr=0.1, warmup_epochs=0.0,
                         random_crop_padding=PADDING, horizontal_flip=True, compile=cuda and not args.no_compile)
    ours = _diffbalance(images, config, device, warmup, steps, repeats)
    naive = _naive(images, config, device, warmup, steps, workers, repeats)

    size = f"{images.images.shape[2]}×{images.images.shape[3]}"
    print(f"device {describe(device)} | model {model} | batch {batch} | {size} | {steps} timed steps "
          f"(+{warmup} warm-up), best of {repeats} | compile {config.compile} | naive workers {workers}")
    print(f"{'path':<14}{'img/s':>12}{'ms/step':>10}")
    for name, img_s in (("diffbalance", ours), ("naive", naive)):
        print(f"{name:<14}{img_s:>12,.0f}{1000 * batch / img_s:>10.1f}")
    print(f"{'ratio':<14}{ours / naive:>11.2f}×")
    if args.json:
        args.json.write_text(json.dumps({"device": describe(device), "model": model, "batch": batch, "steps": steps,
                                         "compile": config.compile, "diffbalance_img_s": ours, "naive_img_s": naive,
                                         "ratio": ours / naive}, indent=2) + "\n")


def _images(data: str, size: int, n: int) -> ImageSet:
    """n uint8 images: random ones (size×size RGB, 10 classes) or the first n of a CIFAR-10 training set (cycled)."""
    g = torch.Generator().manual_seed(0)
    if data == "synthetic":
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        return ImageSet(images, labels, tuple(str(c) for c in range(NUM_CLASSES)))
    from diffbalance.data.cifar10 import load_cifar10_batches

    train, _ = load_cifar10_batches(Path(data))
    return train.subset(torch.arange(n) % len(train))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _diffbalance(images: ImageSet, config: TrainConfig, device: torch.device, warmup: int, steps: int,
                 repeats: int) -> float:
    """img/s of the fastest of `repeats` epochs of classify.train's loop (`steps` batches each) after `warmup`
    steps of the same run."""
    timed = ImageSet(images.images[: config.batch_size * steps], images.labels[: config.batch_size * steps],
                     images.class_names)
    run = train_mod._build_run(timed, config, device, seed=0)
    run.model.train()
    for step in range(warmup):  # compile, cudnn autotuning, allocator warm-up
        train_step(run, torch.arange(step * config.batch_size, (step + 1) * config.batch_size, device=device) %
                   len(timed), step)
    best = float("inf")
    for epoch in range(1, 1 + repeats):
        _sync(device)
        start = time.perf_counter()
        train_mod._train_one_epoch(run, epoch, lambda *a, **k: None, start)  # ends with its one loss read-back
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return steps * config.batch_size / best


class _PILImages(Dataset):
    """The tutorial's dataset: PIL images and int labels, transformed one at a time in the loader's workers."""

    def __init__(self, images: ImageSet, transform):
        mode = "L" if images.channels == 1 else "RGB"
        pixels = images.images.permute(0, 2, 3, 1).squeeze(-1).numpy()  # (N, H, W[, C]) uint8
        self.pil = [Image.fromarray(p, mode=mode) for p in pixels]
        self.labels = images.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int):
        return self.transform(self.pil[i]), self.labels[i]


def _naive(images: ImageSet, config: TrainConfig, device: torch.device, warmup: int, steps: int, workers: int,
           repeats: int) -> float:
    """img/s of the fastest of `repeats` windows of `steps` steps of the tutorial loop on the same images, model
    and optimizer settings."""
    mean, std = channel_mean_std(images.images)
    size = images.images.shape[2:]
    transform = transforms.Compose([
        transforms.RandomCrop(tuple(size), padding=PADDING),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    loader = DataLoader(_PILImages(images, transform), batch_size=config.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = build_classifier(config.model, images.num_classes, images.channels).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                weight_decay=config.weight_decay)
    best, start = float("inf"), None
    running_loss = 0.0
    for i, (x, y) in enumerate(loader):
        if i >= warmup and (i - warmup) % steps == 0:  # a window starts (and the previous one ends)
            _sync(device)
            if start is not None:
                best = min(best, time.perf_counter() - start)
            start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running_loss += loss.item()  # the tutorial's running loss: a sync every step
    _sync(device)
    best = min(best, time.perf_counter() - start)
    return steps * config.batch_size / best


if __name__ == "__main__":
    main()
