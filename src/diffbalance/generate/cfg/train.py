"""Train the class-conditional ε-network on the (imbalanced) training set.

The loss is paper eq. 7 with label dropout (cfg/loss.py). AdamW with linear warmup, gradient clipping, an EMA of
the weights (the EMA network is what gets sampled), bf16 autocast on CUDA only.

Every random draw of step k (batch, flips, dropped labels, t, ε, dropout) comes from seed derive_seed(seed, k)
and the epoch order from derive_seed(seed, "epoch", e): a run resumed from checkpoint-k continues exactly as
the uninterrupted run would have, and the same seed gives the same weights on the CPU.

Output folder = the generator's pipeline folder (cfg/generator.py), plus:
    train_config.json               the resolved CFGTrainConfig (written first; a resume must match it)
    checkpoint-<step>/              a pipeline folder of the EMA UNet at that step, and
    checkpoint-<step>/train_state/  model + EMA + AdamW (diffbalance.checkpoint: state.safetensors + state.json)
The root's model_index.json is written last: its presence = finished.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from diffbalance.atomic import atomic_path, ensure_writable_dir, write_json
from diffbalance.checkpoint import load_training_state, save_training_state
from diffbalance.data.imageset import ImageSet
from diffbalance.device import DeviceLike, fast_gpu_path, resolve_device
from diffbalance.errors import DiffbalanceError
from diffbalance.generate.cfg import legacy
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.generator import generator_info, is_finished, save_generator
from diffbalance.generate.cfg.loss import ddpm_loss
from diffbalance.generate.cfg.unet import build_unet, null_class, pad_images, unet_sample_size
from diffbalance.progress import progress_bar
from diffbalance.seeding import derive_seed, forked_rng, generator

TRAIN_STATE = "train_state"


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 {0..255} → float [-1, 1]."""
    return images.float() / 127.5 - 1


def train_generator(
    train: ImageSet,
    config: CFGTrainConfig,
    out_dir: Path | str,
    device: DeviceLike = "auto",
    progress: bool = True,
    resume: bool = True,
) -> Path:
    """Train (or resume, or reuse a finished run in `out_dir`) and return the generator's pipeline folder (out_dir)."""
    device = resolve_device(device)
    out_dir = ensure_writable_dir(Path(out_dir))
    _check_or_write_config(out_dir, config, train, resume)
    if is_finished(out_dir) or _finish_legacy_run(out_dir):
        return out_dir
    with forked_rng(config.seed):  # diffusers initialises from the global RNG: seed a forked copy (CPU, then moved)
        model = build_unet(config.model_size, train.num_classes, train.channels, train.image_size,
                           config.block_out_channels, config.layers_per_block, config.dropout).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = _restore_latest(out_dir, model, ema, opt) if resume else 0
    alphas_cumprod = DDPMScheduler(**config.noise_schedule()).alphas_cumprod.to(device)  # ᾱ_t, (T,)
    images = to_model_range(train.images).to(device)  # (N, C, H, W) in [-1, 1]
    labels = train.labels.to(device)
    size = unet_sample_size(model)
    autocast = torch.autocast("cuda", torch.bfloat16) if config.bf16 and fast_gpu_path(device) else contextlib.nullcontext()
    model.train()
    with progress_bar("train cfg generator", config.train_steps, progress) as advance:
        advance(start)
        tic, seen = time.perf_counter(), 0
        for step in range(start, config.train_steps):
            x0, c = _batch(images, labels, step, config)
            gen = generator(derive_seed(config.seed, step), device)
            x0 = pad_images(x0, size)
            if config.horizontal_flip:
                flip = torch.rand(len(x0), generator=gen, device=device) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            # UNet dropout draws from the global RNG: fork it and seed it per step
            with forked_rng(derive_seed(config.seed, step, "dropout"), device), autocast:
                loss = ddpm_loss(model, x0, c, null_class(model), alphas_cumprod, config.p_uncond, gen)  # eq. 7
            _optimizer_step(model, opt, loss, config, step)
            _ema_update(ema, model, config.ema_decay, step)
            seen += len(x0)
            done = step + 1
            advance(1, loss=loss.item(), img_s=seen / (time.perf_counter() - tic))
            if done == config.train_steps or (config.checkpoint_every_steps and done % config.checkpoint_every_steps == 0):
                _save_checkpoint(out_dir, done, model, ema, opt, generator_info(train, config, ema, done), config)
    save_generator(out_dir, ema, DDPMScheduler(**config.noise_schedule()),
                   generator_info(train, config, ema, config.train_steps))
    return out_dir


def _batch(images: torch.Tensor, labels: torch.Tensor, step: int, config: CFGTrainConfig):
    """Batch `step`: the next slice of a per-epoch seeded permutation (a batch may run into the next epoch)."""
    n, b = len(images), config.batch_size
    parts, pos = [], step * b
    while pos < (step + 1) * b:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=generator(derive_seed(config.seed, "epoch", epoch)))
        parts.append(perm[offset : offset + (step + 1) * b - pos])
        pos += len(parts[-1])
    idx = torch.cat(parts).to(images.device)
    return images[idx], labels[idx]


def _optimizer_step(model, opt, loss: torch.Tensor, config: CFGTrainConfig, step: int) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    for group in opt.param_groups:
        group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))  # linear warmup
    opt.step()


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1 + step) / (10 + step))  # warm-up of the decay, as diffusers' EMAModel
    ema_p, p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, p, 1 - d)  # ema ← d·ema + (1 − d)·θ


def _save_checkpoint(out_dir, step, model, ema, opt, info, config: CFGTrainConfig) -> None:
    with atomic_path(out_dir / f"checkpoint-{step}") as tmp:
        save_generator(tmp, ema, DDPMScheduler(**config.noise_schedule()), info)
        save_training_state(tmp / TRAIN_STATE, {"model": model, "ema": ema}, opt,
                            meta={"step": step, "config": config.to_dict()})
    for _, old in _checkpoints(out_dir)[: -config.keep_checkpoints]:
        _delete_checkpoint(old)


def _delete_checkpoint(folder: Path) -> None:
    """Rename to a temporary name first, then delete: a crash midway leaves a name `remove_stale_temps` clears,
    never a half-deleted checkpoint-<step> that looks complete."""
    doomed = folder.with_name(f".{folder.name}.tmp-delete-{os.getpid()}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints, oldest first (older-layout ones included)."""
    found = []
    for p in Path(out_dir).glob("checkpoint-*"):
        if p.name.split("-")[-1].isdigit() and (p / TRAIN_STATE / "state.json").is_file():
            found.append((int(p.name.split("-")[-1]), p))
    return sorted(found)


def _restore_latest(out_dir: Path, model, ema, opt) -> int:
    """Load the newest complete checkpoint into model/ema/opt; returns its step (0 when there is none)."""
    checkpoints = _checkpoints(out_dir)
    if not checkpoints:
        return 0
    state_dir = checkpoints[-1][1] / TRAIN_STATE
    state = legacy.training_state(state_dir) if legacy.is_training_state(state_dir) else load_training_state(state_dir)
    state.restore({"model": model, "ema": ema}, opt)
    return int(state.meta["step"])


def _finish_legacy_run(out_dir: Path) -> bool:
    """A run finished in the older layout (out/unet/generator.json): add the pipeline's root files, keep unet/."""
    info = legacy.finished_run_info(out_dir)
    if info is None:
        return False
    scheduler = DDPMScheduler(**info.pop("noise_schedule"))
    save_generator(out_dir, None, scheduler, info)
    return True


def check_resume(out_dir: Path, config: CFGTrainConfig, train: ImageSet, resume: bool) -> dict:
    """A folder that already holds a generator run may only be resumed, with the same settings and data; returns
    the record train_config.json holds for this run. Writes nothing (the train-generator command checks first)."""
    path = out_dir / "train_config.json"
    record = {"config": config.to_dict(), "classes": list(train.class_names), "image_shape": list(train.images.shape[1:]),
              "train_images": len(train)}
    if path.exists():
        if not resume:
            raise DiffbalanceError(f"{out_dir} already holds a generator run", "pass --resume to continue it, or use a new --out")
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise DiffbalanceError(f"{path} is damaged", "use a new --out, or delete the folder to start over") from None
        if old != record:
            changed = sorted(k for k in record["config"] if old.get("config", {}).get(k) != record["config"][k])
            raise DiffbalanceError(
                f"{out_dir} holds a generator trained with other settings ({', '.join(changed) or 'data'} differ)",
                "use a new output folder, or the same settings to resume",
            )
    return record


def _check_or_write_config(out_dir: Path, config: CFGTrainConfig, train: ImageSet, resume: bool) -> None:
    write_json(out_dir / "train_config.json", check_resume(out_dir, config, train, resume))
