"""Train a classifier on an ImageSet; the result classifies (`predict`) and extracts features (`features`).

The whole training set lives on the device as one uint8 tensor; each epoch cuts batches from a permutation
seeded by (seed, epoch), and each step's crop/flip/mix draws are seeded by (seed, step). So a run is a pure
function of (data, config, seed): the same on every call on the CPU, and exactly resumable from a checkpoint
that stores weights, optimizer buffers, scheduler state and the epoch (the RNG "state" is the epoch itself).

Learning rate, as a pure function of the 0-based step s with T steps in all and W warmup steps (lr_factor):
    cosine:   lr_s = lr · (s + 1) / W                              for s < W (linear warmup)
              lr_s = lr · ½ (1 + cos(π (s − W) / (T − W)))         after (Loshchilov & Hutter 2017, no restarts)
    onecycle: torch's OneCycleLR (Smith & Topin 2019) with cos annealing and fixed momentum: from lr/25 up to lr
              over the first W steps, then down to lr/(25·10⁴); W = warmup_epochs, or 30 % of T when 0.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from diffbalance.atomic import ensure_writable_dir
from diffbalance.checkpoint import load_training_state, save_training_state
from diffbalance.classify.augment import augment_batch, build_batch_mix, channel_mean_std, mix_batch, normalize
from diffbalance.classify.checkpoint import RESUME_FOLDER, load_classifier_files, save_classifier
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.losses import LossFn, build_loss
from diffbalance.classify.models import build_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.device import DeviceLike, fast_gpu_path, resolve_device
from diffbalance.errors import DiffbalanceError
from diffbalance.progress import progress_bar
from diffbalance.seeding import derive_seed, forked_rng, generator

LOG_EVERY_STEPS = 10  # how often the progress bar reads the loss back (a GPU sync)
# every random draw of a run, so (seed, epoch) in a checkpoint is its whole RNG state
RNG_SCHEME = "init: derive_seed(seed, 'init'); batch order: (seed, 'epoch', epoch); crop/flip, mix: (seed, ..., step)"


@dataclass(eq=False)
class TrainedClassifier:
    """A trained network with what it needs to be fed: uint8 images in, logits / labels / features out (on CPU)."""

    model: nn.Module  # eval mode, on `device`
    config: TrainConfig
    class_names: tuple[str, ...]
    mean: list[float]  # per-channel training-set mean, [0, 1] units
    std: list[float]  # per-channel training-set std, [0, 1] units
    train_seconds: float  # wall-clock training time, summed over resumed parts
    device: torch.device

    def logits(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N, K) float32 logits of uint8 images (N, C, H, W)."""
        return self._batched(images, batch_size, self.model)

    def predict(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N,) int64 predicted class indices."""
        return self.logits(images, batch_size).argmax(dim=1)

    def features(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N, D) float32 penultimate features (`forward_features`, the input of the linear head)."""
        return self._batched(images, batch_size, self.model.forward_features)

    @torch.no_grad()
    def _batched(self, images: torch.Tensor, batch_size: int | None, fn) -> torch.Tensor:
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != len(self.mean):
            raise DiffbalanceError(
                f"classifier input must be uint8 (N, {len(self.mean)}, H, W), got {images.dtype} {tuple(images.shape)}",
                "pass ImageSet.images of the kind the classifier was trained on",
            )
        self.model.eval()
        fast = fast_gpu_path(self.device)
        step = batch_size or self.config.eval_batch_size
        outputs = []
        for start in range(0, len(images), step):
            x = normalize(images[start : start + step].to(self.device), self.mean, self.std)
            if fast and self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=fast and self.config.bf16):
                outputs.append(fn(x).float().cpu())
        if not outputs:  # no images: keep the output width
            width = fn(torch.zeros(1, len(self.mean), 8, 8, device=self.device)).shape[1]
            return torch.zeros(0, width)
        return torch.cat(outputs)

    def save(self, folder: Path) -> None:
        """model.safetensors + classifier.json (config, class names, normalisation) in `folder`."""
        meta = {
            "config": self.config.to_dict(),
            "class_names": list(self.class_names),
            "mean": self.mean,
            "std": self.std,
            "train_seconds": self.train_seconds,
        }
        save_classifier(Path(folder), self.model, meta)

    @classmethod
    def load(cls, folder: Path, device: DeviceLike = "auto") -> TrainedClassifier:
        """A classifier saved by `save`, on `device` ("auto", "cpu", "cuda", "cuda:N" or a torch.device)."""
        device = resolve_device(device)
        tensors, meta = load_classifier_files(Path(folder))
        config = TrainConfig.from_dict(meta["config"])
        model = build_classifier(config.model, len(meta["class_names"]), len(meta["mean"]))
        model.load_state_dict(tensors)
        model = model.to(device).eval()
        if fast_gpu_path(device) and config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return cls(model, config, tuple(meta["class_names"]), meta["mean"], meta["std"], meta["train_seconds"], device)


def lr_factor(step: int, *, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak lr at 0-based `step` (see the module header)."""
    if schedule == "cosine":
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    # onecycle, as torch.optim.lr_scheduler.OneCycleLR(anneal_strategy="cos", three_phase=False)
    initial, final = 1 / 25, 1 / 25 / 1e4
    peak_step = (warmup_steps if warmup_steps > 0 else 0.3 * total_steps) - 1
    if step <= peak_step:
        return _cos_ramp(initial, 1.0, step / peak_step if peak_step > 0 else 1.0)
    return _cos_ramp(1.0, final, (step - peak_step) / max(1e-12, total_steps - 1 - peak_step))


def _cos_ramp(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * min(pct, 1.0)) + 1)


@dataclass
class _Run:
    """Everything one training step touches."""

    model: nn.Module  # the module whose weights are saved
    step_model: nn.Module  # `model`, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: LossFn
    mix: object  # a torchvision v2 transform or None
    images: torch.Tensor  # (N, C, H, W) uint8, on the device
    labels: torch.Tensor  # (N,) int64, on the device
    mean: list[float]
    std: list[float]
    config: TrainConfig
    seed: int
    device: torch.device
    batch_size: int  # min(config.batch_size, N)
    steps_per_epoch: int

    @property
    def fast(self) -> bool:
        return fast_gpu_path(self.device)


def train_classifier(
    train: ImageSet,
    config: TrainConfig,
    *,
    device: DeviceLike = "auto",
    seed: int,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> TrainedClassifier:
    """Train `config.model` on `train` on `device` ("auto", "cpu", "cuda", "cuda:N" or a torch.device); resumes
    from `checkpoint_dir/resume` when it holds this run's checkpoint."""
    device = resolve_device(device)
    if len(train) < 2:
        raise DiffbalanceError(f"cannot train a classifier on {len(train)} image(s)", "pass a larger training set")
    run = _build_run(train, config, device, seed)
    meta = {"config": config.to_dict(), "seed": seed, "data": _fingerprint(train), "rng": RNG_SCHEME}
    folder = None if checkpoint_dir is None else ensure_writable_dir(Path(checkpoint_dir)) / RESUME_FOLDER
    start_epoch, seconds_before = _resume(folder, meta, run)

    started = time.perf_counter()
    steps_left = (config.epochs - start_epoch) * run.steps_per_epoch
    with progress_bar(f"train {config.model}", steps_left, enabled=progress) as advance:
        for epoch in range(start_epoch, config.epochs):
            _train_one_epoch(run, epoch, advance, time.perf_counter())
            done = epoch + 1
            every = config.checkpoint_every_epochs
            if folder is not None and every > 0 and (done % every == 0 or done == config.epochs):
                state = {**meta, "epoch": done, "train_seconds": seconds_before + time.perf_counter() - started}
                save_training_state(folder, {"model": run.model}, run.optimizer, run.scheduler, state)
    seconds = seconds_before + time.perf_counter() - started
    return TrainedClassifier(run.model.eval(), config, train.class_names, run.mean, run.std, seconds, device)


def _build_run(train: ImageSet, config: TrainConfig, device: torch.device, seed: int) -> _Run:
    mean, std = channel_mean_std(train.images)
    with forked_rng(derive_seed(seed, "init")):  # same seed → same initial weights, caller's RNG untouched
        model = build_classifier(config.model, train.num_classes, train.channels)
    fast = fast_gpu_path(device)
    model = model.to(device)
    if fast and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if fast and config.compile else model
    batch_size = min(config.batch_size, len(train))
    steps_per_epoch = len(train) // batch_size  # the last partial batch is dropped (batch norm, equal steps)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    factor = partial(lr_factor, schedule=config.schedule, warmup_steps=warmup_steps, total_steps=total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return _Run(
        model=model,
        step_model=step_model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=build_loss(config.loss, train.counts(), config.label_smoothing, device),
        mix=build_batch_mix(config.batch_mix, config.batch_mix_alpha, train.num_classes),
        images=train.images.to(device),
        labels=train.labels.to(device),
        mean=mean,
        std=std,
        config=config,
        seed=seed,
        device=device,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
    )


def _train_one_epoch(run: _Run, epoch: int, advance, since: float) -> None:
    cfg = run.config
    run.model.train()
    order = torch.randperm(len(run.images), generator=generator(derive_seed(run.seed, "epoch", epoch)))
    order = order.to(run.device)
    loss_sum = torch.zeros((), device=run.device)
    images_done = 0
    for i in range(run.steps_per_epoch):
        step = epoch * run.steps_per_epoch + i
        idx = order[i * run.batch_size : (i + 1) * run.batch_size]
        x, y = run.images[idx], run.labels[idx]  # (B, C, H, W) uint8, (B,)
        x = augment_batch(
            x,
            padding=cfg.random_crop_padding,
            horizontal_flip=cfg.horizontal_flip,
            generator=generator(derive_seed(run.seed, "augment", step)),
        )
        x = normalize(x, run.mean, run.std)
        if run.mix is not None:
            x, y = mix_batch(run.mix, x, y, derive_seed(run.seed, "mix", step))  # y: (B, K) soft labels
        if run.fast and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.fast and cfg.bf16):
            logits = run.step_model(x)
        loss = run.loss_fn(logits.float(), y)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        loss_sum += loss.detach()
        images_done += len(x)
        if (i + 1) % LOG_EVERY_STEPS == 0 or i + 1 == run.steps_per_epoch:
            img_s = images_done / max(1e-9, time.perf_counter() - since)
            advance(1, epoch=epoch + 1, loss=float(loss_sum) / (i + 1), img_s=int(img_s))
            images_done, since = 0, time.perf_counter()
        else:
            advance(1)
    if not math.isfinite(float(loss_sum)):
        raise DiffbalanceError(f"training loss became {float(loss_sum)} in epoch {epoch + 1}", "lower lr")


def _resume(folder: Path | None, meta: dict, run: _Run) -> tuple[int, float]:
    """(epochs already done, seconds already spent); loads the checkpoint into `run` when there is one."""
    loaded = None if folder is None else load_training_state(folder)
    if loaded is None:
        return 0, 0.0
    saved = loaded.meta
    ignore = ("eval_batch_size", "checkpoint_every_epochs")  # do not change the weights
    same_config = {k: v for k, v in saved["config"].items() if k not in ignore} == {
        k: v for k, v in meta["config"].items() if k not in ignore
    }
    if not same_config or saved["seed"] != meta["seed"] or saved["data"] != meta["data"]:
        raise DiffbalanceError(
            f"the checkpoint in {folder} comes from another run (different config, seed or training images)",
            f"delete {folder} to start afresh, or pass another checkpoint folder",
        )
    loaded.restore({"model": run.model}, run.optimizer, run.scheduler)
    return int(saved["epoch"]), float(saved["train_seconds"])


def _fingerprint(train: ImageSet) -> dict:
    """What identifies the training images: their shape, class counts and a SHA-256 of pixels and labels."""
    h = hashlib.sha256(train.images.contiguous().numpy().reshape(-1))  # hashes the buffer, no copy
    h.update(train.labels.contiguous().numpy())
    return {"shape": list(train.images.shape), "counts": train.counts(), "sha256": h.hexdigest()}
