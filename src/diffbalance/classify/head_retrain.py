"""Classifier re-training (cRT) on frozen features: the optional second stage of `train_classifier`.

Kang et al. 2020, "Decoupling representation and classifier for long-tailed recognition" (cRT), as LDMLR
(Han et al. 2024) applies it after training on real + generated images: keep the representation f of stage 1,
re-initialise the linear head (W, b) and train only it on class-balanced real data,
    min_{W, b}  E_{(x, y) ~ class-balanced real images}  CE(W f(x) + b, y).
Class-balanced: each epoch draws n = ⌊R / C⌋ real images of each of the C classes that have any (with replacement
within a class, R = the number of real images), so an epoch is R images rounded down to a multiple of C and a
generated image never reaches the head. Frozen includes batch norm (eval mode): `forward_features` is bit-identical
after the stage. Augmentation is the recipe's crop/flip only (no batch mixing); the loss is plain CE (no label
smoothing, no prior: the sampler already balances); SGD with the recipe's momentum and weight decay, per-step
cosine from head_retrain_lr (scaled like lr when lr_reference_batch is set) to 0 with no warmup.

Feature fills (LDMLR, Han et al. 2024; TrainConfig.feature_fill, classify.feature_fill): class c's draws come from
the union of its n_c real images and its m_c synthetic features (`SyntheticFeatures`, fixed for the stage), drawn
alike: n = ⌊R / C⌋ per class, uniformly over the n_c + m_c members, real first (so with m_c = 0 the draw, and the
random numbers it takes, are plain cRT's). A real image goes through crop/flip and the frozen network as above; a
synthetic feature goes to the head as it is. A batch holding synthetic features takes the weighted loss
Σ w_i ℓ_i / Σ w_i (w = feature_fill.synthetic_weight for a synthetic feature, 1 for a real image); a batch without
any takes plain CE through the same ops as plain cRT, so with 0 synthetic features the stage is cRT bit for bit.

Random draws: the head's init under derive_seed(seed, "head_init"), epoch e's draw from (seed, "head_epoch", e),
step s's crop/flip from (seed, "head_augment", s); so (head weights, optimizer, scheduler, epoch) in a checkpoint
are the stage's whole state (with the synthetic features, saved apart: classify.feature_fill) and a resumed stage
ends with the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from diffbalance.classify.augment import augment_batch, normalize
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.losses import cross_entropy
from diffbalance.classify.schedule import lr_scheduler, scaled_lr
from diffbalance.classify.step import batch_layout
from diffbalance.infra.distributed import Dist
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.seeding import derive_seed, forked_rng, generator

RNG_SCHEME = "head: init (seed, 'head_init'); draw (seed, 'head_epoch', epoch); crop/flip (seed, 'head_augment', step)"


def class_balanced_indices(
    labels: torch.Tensor, real: torch.Tensor, gen: torch.Generator, synthetic_labels: torch.Tensor | None = None
) -> torch.Tensor:
    """One epoch of indices (n·C,), shuffled: n = ⌊R / C⌋ draws with replacement from the real images (`real`, (N,)
    bool) of each of the C classes that have any; labels (N,). With `synthetic_labels` (M,), synthetic feature j is
    index N + j and class c draws from its real images and then its synthetic features. CPU tensors."""
    classes = labels[real].unique()  # (C,) sorted, so the draw order is fixed
    per_class = int(real.sum()) // len(classes)
    picks = []
    for c in classes.tolist():
        members = torch.nonzero(real & (labels == c)).squeeze(1)  # (n_c,) real images of class c
        if synthetic_labels is not None:  # (n_c + m_c,): then its synthetic features, numbered from N
            members = torch.cat([members, len(labels) + torch.nonzero(synthetic_labels == c).squeeze(1)])
        picks.append(members[torch.randint(len(members), (per_class,), generator=gen)])
    drawn = torch.cat(picks)  # (n·C,)
    return drawn[torch.randperm(len(drawn), generator=gen)]


def reset_head(model: nn.Module, seed: int) -> None:
    """Re-initialise `model.head` (every registered classifier's final nn.Linear) with its default init, seeded."""
    with forked_rng(derive_seed(seed, "head_init")):  # the caller's global RNG untouched
        model.head.reset_parameters()


class TrainingRun(Protocol):
    """What stage 2 reads of classify.train's run (a Protocol, so this module does not import train)."""

    model: nn.Module
    images: torch.Tensor  # (N, C, H, W) uint8, on the device
    labels: torch.Tensor  # (N,) int64, on the device
    norm: tuple[torch.Tensor, torch.Tensor]  # μ, σ as float32 (1, C, 1, 1) on the device
    rng: torch.Generator  # on the device, re-seeded per step
    config: TrainConfig
    seed: int
    device: torch.device
    world: Dist  # the processes of the run (rank 0 writes files)

    @property
    def fast(self) -> bool: ...


@dataclass
class SyntheticFeatures:
    """Generated penultimate features (a feature fill, classify.feature_fill) that stage 2 draws beside real images."""

    features: torch.Tensor  # (M, D) float32, on the device
    labels: torch.Tensor  # (M,) int64, on the device
    weight: float  # loss weight of each (a real image weighs 1)
    summary: dict  # JSON-able record of the fill (counts, feature-model loss, seconds)


@dataclass
class HeadStage:
    """What stage 2 keeps across epochs: the head's optimizer and lr schedule, and the real images' labels."""

    optimizer: torch.optim.Optimizer  # SGD over model.head's parameters only
    scheduler: torch.optim.lr_scheduler.LambdaLR
    labels: torch.Tensor  # (N,) int64, CPU
    real: torch.Tensor  # (N,) bool, CPU: the images the sampler may draw
    batch_size: int
    steps_per_epoch: int
    fill: SyntheticFeatures | None = None  # synthetic features drawn beside the real images (feature fills)


def build_head_stage(model: nn.Module, labels: torch.Tensor, real: torch.Tensor, config: TrainConfig) -> HeadStage:
    """The optimizer and schedule of stage 2 (nothing is re-initialised here: that is `reset_head`)."""
    num_real = int(real.sum())
    if num_real == 0:
        raise DiffbalanceError("head_retrain_epochs > 0 needs real images, but every training image is generated",
                               "mark the real images as not synthetic, or set head_retrain_epochs: 0")
    num_classes = len(labels[real].unique())
    epoch_size = num_real // num_classes * num_classes
    batch_size = min(config.batch_size, epoch_size)
    steps_per_epoch = epoch_size // batch_size  # a partial last batch is dropped, as in stage 1
    optimizer = torch.optim.SGD(
        model.head.parameters(),
        lr=scaled_lr(config.head_retrain_lr, batch_size, config.lr_reference_batch),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    total = steps_per_epoch * config.head_retrain_epochs
    scheduler = lr_scheduler(optimizer, schedule="cosine", warmup_steps=0, total_steps=total)
    return HeadStage(optimizer, scheduler, labels.cpu(), real.cpu(), batch_size, steps_per_epoch)


def retrain_head_epoch(run: TrainingRun, stage: HeadStage, epoch: int, advance) -> None:
    """One epoch of stage 2: a class-balanced draw of real images (and synthetic features), crop/flip, frozen
    features, a head step."""
    model = run.model
    model.eval()  # frozen features: batch norm keeps its stage-1 statistics
    draw = generator(derive_seed(run.seed, "head_epoch", epoch))
    fill_labels = None if stage.fill is None else stage.fill.labels.cpu()
    order = class_balanced_indices(stage.labels, stage.real, draw, fill_labels)  # (n·C,) CPU
    is_synthetic = order >= len(stage.labels)  # (n·C,) CPU bool: decided on the host, no GPU sync
    order = order.to(run.device)
    loss_sum = torch.zeros((), device=run.device)
    for i in range(stage.steps_per_epoch):
        step = epoch * stage.steps_per_epoch + i
        batch = slice(i * stage.batch_size, (i + 1) * stage.batch_size)
        features, labels, weights = head_batch(run, stage, order[batch], is_synthetic[batch], step)
        logits = model.head(features)
        loss = cross_entropy(logits, labels) if weights is None else cross_entropy(logits, labels, weights=weights)
        stage.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stage.optimizer.step()
        stage.scheduler.step()
        loss_sum += loss.detach()
        last = i + 1 == stage.steps_per_epoch
        advance(1, **({"epoch": epoch + 1, "loss": float(loss_sum) / (i + 1)} if last else {}))
    if not math.isfinite(float(loss_sum)):
        raise DiffbalanceError(f"head re-training loss became {float(loss_sum)} in epoch {epoch + 1}",
                               "lower head_retrain_lr")


def head_batch(
    run: TrainingRun, stage: HeadStage, idx: torch.Tensor, is_synthetic: torch.Tensor, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(features (B, D), labels (B,), loss weights (B,) or None) of the batch `idx` (B,) on the device, where
    `is_synthetic` (B,) CPU marks the synthetic features (index N + j). Without any: plain cRT's batch, no weights."""
    if not bool(is_synthetic.any()):
        return frozen_features(run, run.images[idx], derive_seed(run.seed, "head_augment", step)), run.labels[idx], None
    fill, n = stage.fill, len(stage.labels)
    real_pos = torch.nonzero(~is_synthetic).squeeze(1).to(run.device)  # (B_r,) positions in the batch
    fake_pos = torch.nonzero(is_synthetic).squeeze(1).to(run.device)  # (B_s,)
    fake = idx[fake_pos] - n  # (B_s,) rows of fill.features
    features = torch.empty(len(idx), fill.features.shape[1], device=run.device)  # (B, D)
    labels = torch.empty(len(idx), dtype=torch.long, device=run.device)  # (B,)
    features[fake_pos], labels[fake_pos] = fill.features[fake], fill.labels[fake]
    if len(real_pos):
        real = idx[real_pos]
        features[real_pos] = frozen_features(run, run.images[real], derive_seed(run.seed, "head_augment", step))
        labels[real_pos] = run.labels[real]
    weights = torch.where(is_synthetic, fill.weight, 1.0).to(run.device)  # (B,) float32
    return features, labels, weights


def frozen_features(run: TrainingRun, images: torch.Tensor, seed: int) -> torch.Tensor:
    """(B, D) float32 `forward_features` of uint8 images (B, C, H, W) after the recipe's crop/flip seeded with
    `seed` (the run's device generator), with no graph: the network is frozen (call it in eval mode)."""
    cfg, model = run.config, run.model
    run.rng.manual_seed(seed)
    x = augment_batch(images, padding=cfg.random_crop_padding, horizontal_flip=cfg.horizontal_flip, generator=run.rng)
    x = batch_layout(normalize(x, *run.norm), cfg)  # (B, C, H, W) float32
    with torch.no_grad(), torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.fast and cfg.bf16):
        return model.forward_features(x).float()  # (B, D); no graph: only the head learns
