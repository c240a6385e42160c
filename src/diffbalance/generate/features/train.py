"""Train the feature diffusion model (LDMLR, Han et al., "Latent-based Diffusion Model for Long-tailed Recognition",
CVPR-W 2024): DDPM's simple ε-loss (Ho et al. 2020, eq. 14) with label dropout (Ho & Salimans 2022), on
standardised features x_0 = (f − μ) / σ (model.py):

    L = ‖ε − ε_θ(√ᾱ_t·x_0 + √(1−ᾱ_t)·ε, t, c̃)‖²,   t ~ U{0..T−1},  ε ~ N(0, I),  c̃ = ∅ with probability p_uncond

ᾱ_t comes from diffusers' DDPMScheduler over the config's forward process (generate.schedulers.make_scheduler).
AdamW, the lr cosine-decayed from `lr` to 0 over train_steps (an annealed lr instead of an EMA of the weights).

Random draws: the initial weights from derive_seed(seed, "init"); step k's batch (drawn with replacement), dropped
labels, t and ε, in that order, from one generator on the features' device seeded with derive_seed(seed, "step", k).
So (weights, AdamW buffers, schedule, k) are the whole state: a checkpoint holds them (diffbalance.infra.checkpoint,
safetensors + JSON, written atomically by rank 0 of `Checkpointing.world`) and a resumed run ends with the same
weights on the CPU. The same features and seed give the same model on every rank of a DDP job (no DDP wrapper:
the model is small and every rank trains it whole).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from diffbalance.infra import distributed
from diffbalance.infra.checkpoint import load_training_state, save_training_state
from diffbalance.infra.distributed import Dist
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.features.config import FeatureFillConfig
from diffbalance.generate.features.model import FeatureEpsNet, build_feature_model
from diffbalance.generate.schedulers import make_scheduler
from diffbalance.infra.progress import progress_bar
from diffbalance.infra.readout import AsyncScalar
from diffbalance.infra.seeding import derive_seed

LOG_EVERY_STEPS = 25  # the progress bar's loss is refreshed this often (read back without waiting for the GPU)


@dataclass(frozen=True)
class Checkpointing:
    """Where and as what the training checkpoint is written (one folder, the latest state, replaced atomically)."""

    folder: Path
    meta: dict  # the run's identity, saved in every checkpoint
    same_run: Callable[[dict, dict], bool]  # (a checkpoint's meta, `meta`) → whether it is this run's
    world: Dist = field(default_factory=Dist)  # rank 0 of it writes; every rank reads


@dataclass
class TrainedFeatureModel:
    model: FeatureEpsNet  # eval mode, on the features' device
    losses: list[float]  # the ε-loss of every step, in order
    seconds: float  # training wall-clock time, summed over resumed parts


def feature_ddpm_loss(
    model: FeatureEpsNet,
    x0: torch.Tensor,  # (B, D) standardised clean features
    labels: torch.Tensor,  # (B,) int64 class indices
    alphas_cumprod: torch.Tensor,  # (T,) ᾱ_t, on x0's device
    p_uncond: float,
    generator: torch.Generator,  # on x0's device
) -> torch.Tensor:
    """The eq. 14 loss of a batch; draws the dropped labels, t, then ε from `generator` (a fixed order)."""
    device = x0.device
    drop = torch.rand(len(labels), generator=generator, device=device) < p_uncond
    labels = torch.where(drop, torch.full_like(labels, model.null_class), labels)  # label dropout → ∅
    t = torch.randint(0, len(alphas_cumprod), (len(x0),), generator=generator, device=device)
    eps = torch.randn(x0.shape, generator=generator, device=device)
    a = alphas_cumprod[t][:, None]  # (B, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # a sample of q(x_t | x_0)
    return F.mse_loss(model(x_t, t, labels), eps)


def train_feature_model(
    features: torch.Tensor,  # (N, D) float32 real features, on the device to train on
    labels: torch.Tensor,  # (N,) int64, same device
    num_classes: int,
    config: FeatureFillConfig,
    *,
    seed: int,
    checkpointing: Checkpointing | None = None,
    progress: bool = True,
) -> TrainedFeatureModel:
    """Train (or resume from `checkpointing.folder`) the feature model for config.train_steps steps."""
    device = features.device
    model = build_feature_model(features.shape[1], num_classes, config.hidden, config.depth, derive_seed(seed, "init"))
    model = model.to(device)
    model.fit_standardisation(features)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    total = config.train_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    losses = torch.zeros(total, device=device)  # (train_steps,) every step's loss, read back at checkpoints
    start, seconds_before = _resume(checkpointing, model, optimizer, scheduler, losses)
    x0_all = model.to_model_space(features)  # (N, D)
    alphas_cumprod = make_scheduler("ddpm", config.noise_schedule()).alphas_cumprod.to(device)  # (T,)
    rng = torch.Generator(device=device)
    started = time.perf_counter()
    model.train()
    with progress_bar("train feature model", total, progress) as advance:
        advance(start)
        shown = AsyncScalar(device)
        for step in range(start, total):
            rng.manual_seed(derive_seed(seed, "step", step))
            idx = torch.randint(0, len(x0_all), (config.batch_size,), generator=rng, device=device)  # (B,)
            loss = feature_ddpm_loss(model, x0_all[idx], labels[idx], alphas_cumprod, config.p_uncond, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses[step] = loss.detach()
            done = step + 1
            if done % LOG_EVERY_STEPS == 0:
                shown.send(losses[step])
            advance(1, **(shown.fields() if done % LOG_EVERY_STEPS == 0 else {}))
            if checkpointing is not None and _checkpoint_due(done, config):
                seconds = seconds_before + time.perf_counter() - started
                _save(checkpointing, model, optimizer, scheduler, losses[:done], seconds)
    history = losses.tolist()
    if not all(math.isfinite(v) for v in history):
        raise DiffbalanceError("the feature model's loss became non-finite", "lower feature_fill.lr")
    return TrainedFeatureModel(model.eval(), history, seconds_before + time.perf_counter() - started)


def _checkpoint_due(done: int, config: FeatureFillConfig) -> bool:
    """Every checkpoint_every_steps steps (when > 0) and after the last one."""
    every = config.checkpoint_every_steps
    return done == config.train_steps or (every > 0 and done % every == 0)


def _save(ckpt: Checkpointing, model, optimizer, scheduler, losses: torch.Tensor, seconds: float) -> None:
    meta = {**ckpt.meta, "feature_step": len(losses), "losses": losses.tolist(), "feature_train_seconds": seconds}
    distributed.on_main(lambda: save_training_state(ckpt.folder, {"model": model}, optimizer, scheduler, meta),
                        False, ckpt.world)


def _resume(ckpt: Checkpointing | None, model, optimizer, scheduler, losses: torch.Tensor) -> tuple[int, float]:
    """(steps done, seconds spent) of the checkpoint in `ckpt.folder`, loaded into the objects; (0, 0) if none."""
    if ckpt is None:
        return 0, 0.0
    # every rank reads before any rank goes on to train (and rank 0 to write a newer checkpoint)
    loaded = distributed.agree(lambda: load_training_state(ckpt.folder), ckpt.world)
    if loaded is None:
        return 0, 0.0
    if not ckpt.same_run(loaded.meta, ckpt.meta):
        raise DiffbalanceError(f"the feature-model checkpoint in {ckpt.folder} comes from another run",
                               f"delete {ckpt.folder.parent} to start afresh, or pass another checkpoint folder")
    loaded.restore({"model": model}, optimizer, scheduler)
    done = int(loaded.meta["feature_step"])
    losses[:done] = torch.tensor(loaded.meta["losses"], dtype=losses.dtype)
    return done, float(loaded.meta["feature_train_seconds"])
