"""One optimiser step of classifier training, and the state it touches (`Run`); classify.train drives the epochs.

A step, for the global batch of image indices `idx` (the same on every rank, see classify.ddp):

    x = crop/flip(images[idx]) → normalise → cutout      (draws from the run's device generator, seeded per step)
    w = per-sample loss weights (synthetic_weight), mixed like the labels when batch mixing is on
    x, y, w = mix(x, y, w)                               (the step's own seed; λ and the box are host scalars)
    x, y, w = this rank's slice                          (all of it on one process)
    loss(model(x), y, w) → backward (DDP averages the ranks' gradients) → SGD step → lr step → EMA

Nothing in it waits for the GPU: random numbers are drawn on the device, μ and σ are device tensors made once,
and the loss stays on the device (diffbalance.infra.readout shows it on the progress bar without blocking).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffbalance.classify.augment import augment_batch, cutout, mix_batch, mix_values, normalize
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.ema import ema_update
from diffbalance.classify.loader import StreamedImages
from diffbalance.classify.losses import LossFn
from diffbalance.classify.swap import SwapPool, swap_batch
from diffbalance.infra.device import fast_gpu_path
from diffbalance.infra.distributed import Dist
from diffbalance.infra.seeding import derive_seed, generator


@dataclass
class Run:
    """Everything one training step touches."""

    model: nn.Module  # the module whose weights are saved (never a DDP or compile wrapper)
    step_model: nn.Module  # what the step calls: `model`, under DDP and/or torch.compile
    ema: nn.Module | None  # the weights' moving average (ema_decay > 0), else None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: LossFn
    mix: object  # a torchvision v2 transform or None
    images: torch.Tensor  # (N, C, H, W) uint8, on the device (a stored set: classify.loader.StreamedImages)
    labels: torch.Tensor  # (N,) int64, on the device
    weighted: torch.Tensor | None  # (N,) bool on the device, the generated images, when they weigh ≠ 1; else None
    mean: list[float]  # per-channel training-set mean, [0, 1] units
    std: list[float]  # per-channel training-set std, [0, 1] units
    norm: tuple[torch.Tensor, torch.Tensor]  # the same μ, σ as float32 (1, C, 1, 1) tensors on the device
    rng: torch.Generator  # on the device; re-seeded by every step (and head step) from (seed, what, step)
    config: TrainConfig
    seed: int
    device: torch.device
    batch_size: int  # the global batch: min(config.batch_size, N), whatever the number of processes
    steps_per_epoch: int
    world: Dist  # the processes sharing each step (rank 0 of 1 when training alone)
    local: slice  # this rank's part of a global batch
    targets: torch.Tensor | None = None  # (N, K) float32 class probabilities on the device replacing the labels in
    # the main stage's loss (soft labels of translated images); None: the labels
    swap: SwapPool | None = None  # generated images swapped in per sample (classify.swap); None: off

    @property
    def fast(self) -> bool:
        return fast_gpu_path(self.device)


def epoch_order(run: Run, epoch: int) -> torch.Tensor:
    """(N,) int64 on the device: epoch `epoch`'s permutation, seeded by (seed, epoch), so every rank and every
    device draws the same one (on the CPU; one copy per epoch, queued without waiting on CUDA)."""
    order = torch.randperm(len(run.images), generator=generator(derive_seed(run.seed, "epoch", epoch)))
    if run.device.type == "cuda":
        return order.pin_memory().to(run.device, non_blocking=True)
    return order.to(run.device)


def reads_share(run: Run) -> bool:
    """Whether a rank reads only its share of each batch: a stored set (classify.loader) under DDP, when nothing
    mixes or swaps images across the batch (batch mixing pairs rows of other ranks' shares)."""
    return (run.world.active and isinstance(run.images, StreamedImages) and run.mix is None
            and run.swap is None)


def loss_weights(run: Run, idx: torch.Tensor, x: torch.Tensor, step: int) -> torch.Tensor | None:
    """(B,) loss weights of a batch: synthetic_weight for a generated image, 1 for a real one, λ-mixed like the
    labels under batch mixing (a mixed sample weighs λ w_i + (1 − λ) w_j); None when every image weighs 1."""
    if run.weighted is None:
        return None
    weights = torch.where(run.weighted[idx], run.config.synthetic_weight, 1.0)  # (B,) float32
    if run.mix is not None:  # the same seed as the step's mix_batch, so the same λ and box
        weights = mix_values(run.mix, x, weights, derive_seed(run.seed, "mix", step))
    return weights


def batch_layout(x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """A normalised batch (B, C, H, W) in the layout the model runs fastest on, for training and prediction alike:
    with `channels_last`, a copy with channels_last strides, also for one channel (where .contiguous() keeps NCHW
    strides) — oneDNN then picks its faster NHWC kernels on the CPU."""
    if not config.channels_last:
        return x
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def train_step(run: Run, idx: torch.Tensor, step: int, batch: torch.Tensor | None = None) -> torch.Tensor:
    """One optimiser step on the global batch `idx` (B,) at 0-based step `step`; returns this rank's loss (0-dim,
    detached, on the device). `batch`: images[idx] already read (a stored set's loader), else indexed here."""
    cfg = run.config
    part = (len(idx), run.local) if reads_share(run) else None  # this rank reads, augments its rows only
    if batch is not None:
        x = batch
    else:
        x = run.images[idx if part is None else idx[run.local]]  # (B or B / P, C, H, W) uint8
    if run.swap is not None:  # Diff-Mix: some samples replaced by generated images of their class
        x = swap_batch(run.swap, x, run.labels[idx], derive_seed(run.seed, "swap", step))
    y = run.labels[idx] if run.targets is None else run.targets[idx]  # (B,) class indices or (B, K) probabilities
    run.rng.manual_seed(derive_seed(run.seed, "augment", step))
    x = augment_batch(x, padding=cfg.random_crop_padding, horizontal_flip=cfg.horizontal_flip, generator=run.rng,
                      part=part)
    x = cutout(normalize(x, *run.norm), cfg.cutout, run.rng, part)  # (B, C, H, W) float32
    weights = loss_weights(run, idx, x, step)  # (B,) or None
    if run.mix is not None:
        x, y = mix_batch(run.mix, x, y, derive_seed(run.seed, "mix", step))  # y: (B, K) soft labels
    if part is None:
        x = x[run.local]
    y = y[run.local]  # this rank's slice (B / P images)
    weight_total = None
    if weights is not None:  # the global Σw / P (losses.py): the ranks' averaged gradient is the world-1 gradient
        weight_total = weights.sum() / run.world.world_size
        weights = weights[run.local]
    x = batch_layout(x, cfg)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.fast and cfg.bf16):
        logits = run.step_model(x)
    loss = run.loss_fn(logits.float(), y, weights, weight_total)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    if run.ema is not None:
        ema_update(run.ema, run.model, cfg.ema_decay)
    return loss.detach()
