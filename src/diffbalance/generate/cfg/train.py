"""Train the class-conditional ε-network on the (imbalanced) training set.

The loss is paper eq. 7 with label dropout (cfg/loss.py). AdamW with linear warmup, gradient clipping, an EMA of
the weights (the EMA network is what gets sampled); on CUDA bf16 autocast, fused AdamW and (`compile=True`) a
compiled UNet, the CPU path plain fp32.

Every random draw of step k (flips, dropped labels, t, ε) comes from seed derive_seed(seed, k) and the epoch order
from derive_seed(seed, "epoch", e), one permutation per epoch: a run resumed from checkpoint-k continues exactly as
the uninterrupted run would have, and the same seed gives the same weights on the CPU.

Several processes (torchrun; diffbalance.infra.distributed): every rank calls `train_generator` alike and trains one
DistributedDataParallel model. `batch_size` is the global batch: every rank builds the same global batch and the
same draws for all of it, then evaluates its own equal slice (`local_slice`); DDP averages the gradients, so the
update, the clipping and the EMA are world size 1's up to float round-off, and a checkpoint written at any world
size resumes at any other. UNet dropout (the paper size's 0.1) is drawn per rank, so that equality holds only
with dropout 0. Rank 0 alone writes the folder (and shows the progress bar); the others wait for it and get its
one-line error if it fails.

The training curve: every LOSS_EVERY_STEPS steps and at every checkpoint a record {"step", "loss" (the mean over the
global batches since the last record), "lr"}; the losses stay on the device until a checkpoint (which waits for the
GPU anyway) reads them back. generator.json's "history" holds the curve, and every checkpoint's state.json its part
so far, so a resumed run ends with the uninterrupted run's curve.

Output folder = the generator's pipeline folder (cfg/generator.py), plus:
    train_config.json               the resolved CFGTrainConfig (written first; a resume must match it)
    checkpoint-<step>/              a pipeline folder of the EMA UNet at that step, and
    checkpoint-<step>/train_state/  model + EMA + AdamW (diffbalance.infra.checkpoint: state.safetensors + state.json)
The root's model_index.json is written last: its presence = finished.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from torch.nn.parallel import DistributedDataParallel

from diffbalance.infra import distributed
from diffbalance.infra.atomic import atomic_path, ensure_writable_dir, write_json
from diffbalance.infra.checkpoint import STATE_META, load_training_state, save_training_state
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import DeviceLike, fast_gpu_path, entry_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.cfg import legacy
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.generator import generator_info, is_finished, save_generator
from diffbalance.generate.cfg.loss import ddpm_loss
from diffbalance.generate.cfg.latent import LatentCodec
from diffbalance.generate.cfg.unet import build_unet, null_class, pad_images, to_model_range, unet_sample_size
from diffbalance.infra.progress import progress_bar
from diffbalance.infra.readout import AsyncScalar
from diffbalance.infra.seeding import derive_seed, forked_rng, generator

TRAIN_STATE = "train_state"
LATENTS_FILE = "latents.safetensors"  # a latent generator's training latents (generate.cfg.latent), encoded once
LOSS_EVERY_STEPS = 25  # the progress bar's loss and the curve's records: the mean over this many steps (and at
# every checkpoint), read without waiting for the GPU


def train_generator(
    train: ImageSet,
    config: CFGTrainConfig,
    out_dir: Path | str,
    device: DeviceLike = "auto",
    progress: bool = True,
    resume: bool = True,
    *,
    compile: bool = False,
    on_record: Callable[[dict], None] | None = None,
) -> Path:
    """Train (or resume, or reuse a finished run in `out_dir`) and return the generator's pipeline folder (out_dir).
    Under torchrun every rank calls it with the same arguments and gets the same folder back, once it is complete.
    `compile`: torch.compile the UNet on CUDA (ignored on the CPU). Like the device it changes the speed, not the
    weights beyond round-off, so it is a run option, outside the config, the folder's key and the resume check.
    `on_record` is called with each record of the training curve once it is read back (at each checkpoint), e.g.
    infra.tensorboard's `Scalars.recorder`."""
    device = entry_device(device)
    d = distributed.current()
    part = distributed.local_slice(config.batch_size, d)  # this rank's images of every global batch
    out_dir = Path(out_dir)
    if distributed.on_main(lambda: _start_folder(out_dir, config, train, resume)):
        return out_dir  # finished before (every rank was told by rank 0)
    codec = LatentCodec.load(config.vae, device) if config.vae else None  # the LDM's VAE (generate.cfg.latent)
    latent = codec.describe(train.image_size, config.vae) if codec else None
    with forked_rng(config.seed):  # diffusers initialises from the global RNG: seed a forked copy (CPU, then moved)
        model = build_unet(config.model_size, train.num_classes, codec.channels if codec else train.channels,
                           codec.latent_size(train.image_size) if codec else train.image_size,
                           config.block_out_channels, config.layers_per_block, config.dropout).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    fast = fast_gpu_path(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            **({"fused": True} if fast else {}))
    start = _restore_latest(out_dir, model, ema, opt) if resume else 0
    curve = LossCurve(_saved_history(out_dir, start) if start else [], on_record)
    net = _network(model, device, d, compile=compile and fast)
    alphas_cumprod = DDPMScheduler(**config.noise_schedule()).alphas_cumprod.to(device)  # ᾱ_t, (T,)
    # (N, C, H, W) in [-1, 1], or the images' latents (N, c, h, w), encoded once
    images = _latents(out_dir, train, codec, d) if codec else to_model_range(train.images[:]).to(device)
    labels = train.labels.to(device)
    order = EpochOrder(len(images), config.seed, device)
    size = unet_sample_size(model)
    autocast = torch.autocast("cuda", torch.bfloat16) if config.bf16 and fast else contextlib.nullcontext()
    has_dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
    model.train()
    with progress_bar("train cfg generator", config.train_steps, progress) as advance:
        advance(start)
        shown = AsyncScalar(device)  # the mean loss of the last LOSS_EVERY_STEPS steps
        loss_total, loss_steps = torch.zeros((), device=device), 0
        tic, seen = time.perf_counter(), 0
        for step in range(start, config.train_steps):
            idx = order.batch(step, config.batch_size)  # (B,) the global batch, the same on every rank
            x0, c, gen = _global_batch(images[idx], labels[idx], size, config, step)
            # UNet dropout draws from the global RNG: fork it and seed it per step (and per rank)
            dropout_rng = forked_rng(_dropout_seed(config.seed, step, d.rank), device) if has_dropout else None
            with dropout_rng or contextlib.nullcontext(), autocast:
                loss = ddpm_loss(net, x0, c, null_class(model), alphas_cumprod, config.p_uncond, gen, part)  # eq. 7
            _optimizer_step(model, opt, loss, config, step)
            _ema_update(ema, model, config.ema_decay, step)
            loss_total += loss.detach().float()
            loss_steps += 1
            seen, done = seen + len(x0), step + 1
            every = config.checkpoint_every_steps
            save = done == config.train_steps or bool(every and done % every == 0)
            report = done % LOSS_EVERY_STEPS == 0 or save  # a record at each checkpoint: a resume starts a new one
            if report:  # the bar's fields change only here (the loss shown lags by up to one report on CUDA)
                mean = _world_mean(loss_total / loss_steps, d)  # 0-dim, on the device
                shown.send(mean)
                curve.add(done, mean, opt.param_groups[0]["lr"])
                loss_total.zero_()  # queued after the copy on the same stream
                loss_steps = 0
            advance(1, **({**shown.fields(), "img_s": seen / (time.perf_counter() - tic)} if report else {}))
            if save:
                curve.read_back()
                info = generator_info(train, config, ema, done, curve.records, latent)
                distributed.on_main(lambda: _save_checkpoint(out_dir, done, model, ema, opt, info, config), share=False)
    distributed.on_main(lambda: save_generator(out_dir, ema, DDPMScheduler(**config.noise_schedule()),
                                               generator_info(train, config, ema, config.train_steps, curve.records,
                                                              latent), **({"vae": codec.vae} if codec else {})),
                        share=False)
    return out_dir


class LossCurve:
    """The training curve (module docstring): records read back so far, and those whose loss is still a device
    tensor."""

    def __init__(self, records: list[dict], on_record: Callable[[dict], None] | None = None):
        self.records, self.on_record = records, on_record
        self._pending: list[tuple[int, torch.Tensor, float]] = []  # (step, 0-dim loss on the device, lr)

    def add(self, step: int, loss: torch.Tensor, lr: float) -> None:
        self._pending.append((step, loss, lr))

    def read_back(self) -> None:
        """The pending losses to the host in one copy (it waits for the GPU), each record then passed to on_record."""
        if not self._pending:
            return
        losses = torch.stack([loss.float() for _, loss, _ in self._pending]).tolist()
        new = [{"step": step, "loss": loss, "lr": lr} for (step, _, lr), loss in zip(self._pending, losses)]
        self._pending = []
        self.records += new
        for record in new if self.on_record is not None else []:
            self.on_record(record)


def _world_mean(value: torch.Tensor, d: distributed.Dist) -> torch.Tensor:
    """The mean of a 0-dim loss over the ranks (each holds its slice's mean; the slices are equal), queued on the
    device; the value itself alone."""
    if d.active:
        torch.distributed.all_reduce(value)
        value /= d.world_size
    return value


def _saved_history(out_dir: Path, step: int) -> list[dict]:
    """The curve checkpoint-<step> kept (none in a checkpoint written before curves were)."""
    try:
        meta = json.loads((out_dir / f"checkpoint-{step}" / TRAIN_STATE / STATE_META).read_text())
        return list(meta.get("history", []))
    except (OSError, ValueError, AttributeError):
        return []


def _start_folder(out_dir: Path, config: CFGTrainConfig, train: ImageSet, resume: bool) -> bool:
    """Rank 0: check or write train_config.json; whether the run in `out_dir` is already finished."""
    ensure_writable_dir(out_dir)
    _check_or_write_config(out_dir, config, train, resume)
    return is_finished(out_dir) or _finish_legacy_run(out_dir)


def _network(model: torch.nn.Module, device: torch.device, d: distributed.Dist, compile: bool) -> torch.nn.Module:
    """What the loss calls: `model` itself, or DDP over it (it averages the gradients of the ranks' slices),
    compiled on request. The optimiser, the EMA and the checkpoints keep using `model`."""
    net = model
    if d.active:  # DDP broadcasts rank 0's weights; every rank built or restored the same ones anyway
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if compile else net


def _global_batch(images: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], config: CFGTrainConfig,
                  step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """Batch `step` (padded, half of it flipped) and the generator of its draws: the flips first, then the
    loss's (every rank makes the same draws for the whole global batch)."""
    gen = generator(derive_seed(config.seed, step), images.device)
    x0 = pad_images(images, size)
    if config.horizontal_flip:
        flip = torch.rand(len(x0), generator=gen, device=x0.device) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    return x0, labels, gen


def _dropout_seed(seed: int, step: int, rank: int) -> int:
    """The global-RNG seed of step `step`'s dropout masks on `rank` (rank 0's is the single-process one)."""
    return derive_seed(seed, step, "dropout") if rank == 0 else derive_seed(seed, step, "dropout", rank)


class EpochOrder:
    """The data order: one seeded permutation per epoch (drawn once, on the CPU so every device gets the same
    order, then kept on the device); batch k is positions [k·B, (k+1)·B) of the epochs laid end to end (a batch may
    run into the next epoch)."""

    def __init__(self, n: int, seed: int, device: torch.device):
        self.n, self.seed, self.device = n, seed, device
        self._perms: dict[int, torch.Tensor] = {}  # epoch → (n,) permutation on the device

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}  # the batch's earlier epoch stays
            perm = torch.randperm(self.n, generator=generator(derive_seed(self.seed, "epoch", epoch)))
            self._perms[epoch] = perm.to(self.device)
        return self._perms[epoch]

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """(batch_size,) int64 indices of batch `step`, on the device."""
        parts, pos, end = [], step * batch_size, (step + 1) * batch_size
        while pos < end:
            epoch, offset = divmod(pos, self.n)
            parts.append(self._perm(epoch)[offset : offset + end - pos])
            pos += len(parts[-1])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _optimizer_step(model, opt, loss: torch.Tensor, config: CFGTrainConfig, step: int) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    for group in opt.param_groups:
        group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))  # linear warmup
    opt.step()


@torch.no_grad()
def _latents(out_dir: Path, train: ImageSet, codec: LatentCodec, d: distributed.Dist) -> torch.Tensor:
    """Every training image's latent, encoded once: OUT/latents.safetensors when an earlier start left it (the folder
    is this data's and this config's: check_resume), else encoded now and saved by rank 0."""
    from safetensors.torch import load_file, save_file

    path = out_dir / LATENTS_FILE
    device = next(codec.vae.parameters()).device
    if path.is_file():
        return load_file(str(path))["latents"].to(device)
    latents = codec.encode(train.images)  # (N, c, h, w), the same on every rank

    def save() -> None:
        with atomic_path(path) as tmp:
            save_file({"latents": latents.cpu().contiguous()}, str(tmp))

    distributed.on_main(save, share=False)
    return latents


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1 + step) / (10 + step))  # warm-up of the decay, as diffusers' EMAModel
    ema_p, p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, p, 1 - d)  # ema ← d·ema + (1 − d)·θ


def _save_checkpoint(out_dir, step, model, ema, opt, info, config: CFGTrainConfig) -> None:
    with atomic_path(out_dir / f"checkpoint-{step}") as tmp:
        save_generator(tmp, ema, DDPMScheduler(**config.noise_schedule()), info)
        save_training_state(tmp / TRAIN_STATE, {"model": model, "ema": ema}, opt,
                            meta={"step": step, "config": config.to_dict(), "history": info.get("history", [])})
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
    """Load the newest complete checkpoint into model/ema/opt; returns its step (0 when there is none). Rank 0
    picks the checkpoint, every rank loads it (its weights do not depend on the world size that wrote it)."""
    checkpoints = distributed.on_main(lambda: _checkpoints(out_dir))
    if not checkpoints:
        return 0
    state_dir = checkpoints[-1][1] / TRAIN_STATE

    def load() -> int:
        is_legacy = legacy.is_training_state(state_dir)
        state = legacy.training_state(state_dir) if is_legacy else load_training_state(state_dir)
        state.restore({"model": model, "ema": ema}, opt)
        return int(state.meta["step"])

    return distributed.agree(load)


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
