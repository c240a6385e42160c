"""Train the class-conditional ε-network on the (imbalanced) training set.

Loss, paper eq. 7 (Ho et al. 2020): ‖ε − ε_θ(√ᾱ_t·x_0 + √(1−ᾱ_t)·ε, t, c)‖², t ~ U{0..T−1}, ε ~ N(0, I),
with the label c replaced by the null class ∅ with probability p_uncond (Ho & Salimans 2022), so one network
learns both ε(x_t, c) and ε(x_t). AdamW with linear warmup, gradient clipping, an EMA of the weights (the EMA
network is what gets sampled), bf16 autocast on CUDA only.

Every random draw of step k (batch, flips, dropped labels, t, ε, dropout) comes from seed derive_seed(seed, k)
and the epoch order from derive_seed(seed, "epoch", e): a run resumed from checkpoint-k continues exactly as
the uninterrupted run would have, and the same seed gives the same weights on the CPU.

Output folder:
    train_config.json               the resolved CFGTrainConfig (written first; a resume must match it)
    checkpoint-<step>/unet/         EMA UNet (save_pretrained: safetensors + config.json) + generator.json
    checkpoint-<step>/train_state/  model.safetensors, ema.safetensors, optimizer.safetensors, state.json
    unet/                           the final EMA UNet + generator.json (written last: its presence = finished)
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from diffbalance.atomic import atomic_path, ensure_writable_dir, write_json
from diffbalance.data.imageset import ImageSet
from diffbalance.device import fast_gpu_path
from diffbalance.errors import DiffbalanceError
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.unet import build_unet, null_class, pad_images, unet_sample_size
from diffbalance.progress import progress_bar
from diffbalance.seeding import derive_seed, generator

GENERATOR_FILE = "generator.json"


def generator_info(train: ImageSet, config: CFGTrainConfig, unet: UNet2DModel, step: int) -> dict[str, Any]:
    """What a sampler needs besides the weights: classes, sizes, the noise schedule, p_uncond, the step."""
    return {
        "method": "cfg",
        "class_names": list(train.class_names),
        "num_classes": train.num_classes,
        "null_class": null_class(unet),
        "image_size": list(train.image_size),  # samples are centre-cropped back to this
        "sample_size": list(unet_sample_size(unet)),  # the (padded) size the UNet works at
        "channels": train.channels,
        "noise_schedule": config.noise_schedule(),
        "p_uncond": config.p_uncond,
        "model_size": config.model_size,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "train_steps_done": step,
        "train_config": config.to_dict(),
        "train_images": len(train),
        "train_counts": train.counts(),
    }


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 {0..255} → float [-1, 1]."""
    return images.float() / 127.5 - 1


def train_generator(
    train: ImageSet,
    config: CFGTrainConfig,
    out_dir: Path,
    device: torch.device,
    progress: bool = True,
    resume: bool = True,
) -> Path:
    """Train (or resume, or reuse a finished run in `out_dir`) and return the final model folder out_dir/unet."""
    out_dir = ensure_writable_dir(Path(out_dir))
    final = out_dir / "unet"
    _check_or_write_config(out_dir, config, train, resume)
    if (final / GENERATOR_FILE).is_file():
        return final
    with torch.random.fork_rng(devices=[]):  # diffusers initialises from the global RNG: seed a forked copy
        torch.default_generator.manual_seed(config.seed)  # built on the CPU, then moved
        model = build_unet(config.model_size, train.num_classes, train.channels, train.image_size,
                           config.block_out_channels, config.layers_per_block, config.dropout).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = _restore_latest(out_dir, model, ema, opt, device) if resume else 0
    schedule = DDPMScheduler(**config.noise_schedule())
    alphas_cumprod = schedule.alphas_cumprod.to(device)  # ᾱ_t, (T,)
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
            drop = torch.rand(len(c), generator=gen, device=device) < config.p_uncond
            c = torch.where(drop, torch.full_like(c, null_class(model)), c)  # label dropout → ∅
            t = torch.randint(0, config.num_train_timesteps, (len(x0),), generator=gen, device=device)
            eps = torch.randn(x0.shape, generator=gen, device=device)
            a = alphas_cumprod[t].view(-1, 1, 1, 1)
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # q(x_t | x_0)
            with _seeded_dropout(derive_seed(config.seed, step, "dropout"), device), autocast:
                loss = torch.nn.functional.mse_loss(model(x_t, t, class_labels=c).sample.float(), eps)  # eq. 7
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            for group in opt.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
            opt.step()
            _ema_update(ema, model, config.ema_decay, step)
            seen += len(x0)
            done = step + 1
            advance(1, loss=loss.item(), img_s=seen / (time.perf_counter() - tic))
            if done == config.train_steps or (config.checkpoint_every_steps and done % config.checkpoint_every_steps == 0):
                _save_checkpoint(out_dir, done, model, ema, opt, generator_info(train, config, ema, done), config)
    _save_unet(final, ema, generator_info(train, config, ema, config.train_steps))
    return final


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


@contextlib.contextmanager
def _seeded_dropout(seed: int, device: torch.device):
    """UNet dropout draws from the global RNG: fork it and seed it per step, leaving the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1 + step) / (10 + step))  # warm-up of the decay, as diffusers' EMAModel
    ema_p, p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, p, 1 - d)  # ema ← d·ema + (1 − d)·θ


def _save_unet(folder: Path, unet: UNet2DModel, info: dict) -> None:
    with atomic_path(folder) as tmp:
        unet.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / GENERATOR_FILE, info)


def _save_checkpoint(out_dir, step, model, ema, opt, info, config: CFGTrainConfig) -> None:
    with atomic_path(out_dir / f"checkpoint-{step}") as tmp:
        _save_unet(tmp / "unet", ema, info)
        state = tmp / "train_state"
        state.mkdir()
        save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, state / "model.safetensors")
        save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()}, state / "ema.safetensors")
        opt_state = opt.state_dict()
        tensors = {f"{i}.{k}": v.cpu() for i, s in opt_state["state"].items() for k, v in s.items()}
        save_file({k: (v if v.ndim else v.reshape(1)).contiguous() for k, v in tensors.items()}, state / "optimizer.safetensors")
        write_json(state / "state.json", {"step": step, "param_groups": opt_state["param_groups"], "config": config.to_dict()})
    checkpoints = _checkpoints(out_dir)
    for old in checkpoints[: -config.keep_checkpoints]:
        shutil.rmtree(old[1], ignore_errors=True)


def _checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in Path(out_dir).glob("checkpoint-*"):
        if p.name.split("-")[-1].isdigit() and (p / "train_state" / "state.json").is_file():
            found.append((int(p.name.split("-")[-1]), p))
    return sorted(found)


def _restore_latest(out_dir: Path, model, ema, opt, device) -> int:
    """Load the newest complete checkpoint into model/ema/opt; returns its step (0 when there is none)."""
    checkpoints = _checkpoints(out_dir)
    if not checkpoints:
        return 0
    step, folder = checkpoints[-1]
    state = folder / "train_state"
    meta = json.loads((state / "state.json").read_text())
    model.load_state_dict(load_file(state / "model.safetensors", device=str(device)))
    ema.load_state_dict(load_file(state / "ema.safetensors", device=str(device)))
    flat = load_file(state / "optimizer.safetensors")
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        i, name = key.split(".", 1)
        per_param.setdefault(int(i), {})[name] = value.reshape(()) if name == "step" else value
    opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def _check_or_write_config(out_dir: Path, config: CFGTrainConfig, train: ImageSet, resume: bool) -> None:
    path = out_dir / "train_config.json"
    record = {"config": config.to_dict(), "classes": list(train.class_names), "image_shape": list(train.images.shape[1:]),
              "train_images": len(train)}
    if path.exists():
        old = json.loads(path.read_text())
        if not resume:
            raise DiffbalanceError(f"{out_dir} already holds a generator run", "pass --resume to continue it, or use a new --out")
        if old != record:
            changed = sorted(k for k in record["config"] if old.get("config", {}).get(k) != record["config"][k])
            raise DiffbalanceError(
                f"{out_dir} holds a generator trained with other settings ({', '.join(changed) or 'data'} differ)",
                "use a new output folder, or the same settings to resume",
            )
    write_json(path, record)
