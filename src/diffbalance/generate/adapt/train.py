"""`adapt_pipeline`: adapt a pretrained text-to-image pipeline to the classes of an (imbalanced) training set, every
class at once, by LoRA or textual inversion (see lora.py, textual_inversion.py).

The loss is Stable Diffusion's own (LDM, Rombach et al. 2022; paper eq. 9) on the VAE latents of the training images:
    z_0 = s·E(x),  z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε,  L = ‖ε − ε_θ(z_t, t, τ(prompt of the image's class))‖²
(v-prediction models regress v = √ᾱ_t·ε − √(1 − ᾱ_t)·z_0 instead). Small images are upscaled to the training
side (bicubic, antialiased; the pipeline's own size by default, 512² for SD 1.5), as img2img does.

Every random draw of step k (the batch, flips, the latent sample, t, ε) comes from one CPU generator seeded
derive_seed(seed, k): a run resumed from checkpoint-k continues exactly as the uninterrupted one, and on the CPU
ends bit-identical. AdamW at a constant rate on the trained tensors only; on CUDA bf16 autocast (weights fp32).

A "probe loss" (the same PROBE_BATCHES fixed batches, t and ε, before training and after) says whether the
adaptation fitted the images: a per-step loss mostly measures which t was drawn.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from diffbalance.infra.atomic import ensure_writable_dir, write_json
from diffbalance.infra.checkpoint import load_training_state, save_training_state
from diffbalance.data.image_folder import class_folders
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import DeviceLike, fast_gpu_path, entry_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.adapt.config import AdaptConfig
from diffbalance.generate.adapt.data import batch_indices, class_words, fingerprint, training_pixels
from diffbalance.generate.adapt.files import ADAPTER_FILE, CONFIG_FILE, is_finished
from diffbalance.generate.adapt.lora import save_lora
from diffbalance.generate.adapt.setup import Adaptation, prepare_adaptation
from diffbalance.generate.adapt.textual_inversion import TI_FILE, TOKENS_DIR, save_tokens
from diffbalance.infra.progress import progress_bar
from diffbalance.infra.seeding import derive_seed, forked_rng, generator

PROBE_BATCHES = 4  # fixed batches (of batch_size images) the probe loss averages over


def adapt_pipeline(
    train: ImageSet,
    model: str,
    config: AdaptConfig,
    out_dir: Path | str,
    device: DeviceLike = "auto",
    progress: bool = True,
    resume: bool = True,
) -> Path:
    """Adapt `model` (a diffusers SD 1.x/2.x folder or Hub id) to the classes of `train`; returns `out_dir`, the
    adapter folder (files.py). Resumes from the newest checkpoint in `out_dir`, or returns at once when the folder
    already holds this adapter finished. The model is loaded before anything is written."""
    device, out_dir = entry_device(device), Path(out_dir)
    record = check_resume(out_dir, model, config, train, resume)
    if is_finished(out_dir):
        return out_dir
    ad = prepare_adaptation(train, model, config, device)
    ensure_writable_dir(out_dir)
    write_json(out_dir / CONFIG_FILE, record)
    opt = torch.optim.AdamW(list(ad.trained.values()), lr=config.lr, weight_decay=config.weight_decay)
    tensors = TrainedTensors(ad.trained)
    start, meta = _restore_latest(out_dir, tensors, opt) if resume else (0, {})
    losses: list[float] = meta.get("losses", [])
    probe_start = meta.get("probe_loss_start")
    if probe_start is None:
        probe_start = probe_loss(ad, train, config, device)
    bf16 = config.bf16 and fast_gpu_path(device)
    autocast = torch.autocast("cuda", torch.bfloat16) if bf16 else contextlib.nullcontext()
    with progress_bar(f"adapt {config.method}", config.train_steps, progress) as advance:
        advance(start)
        for step in range(start, config.train_steps):
            # the global RNG (dropout, if a model has any) forked and seeded per step, as every other draw
            with forked_rng(derive_seed(config.seed, step, "dropout"), device), autocast:
                loss = step_loss(ad, train, config, generator(derive_seed(config.seed, step)), device)
            _optimizer_step(ad, opt, loss, config)
            losses.append(float(loss.detach()))
            done = step + 1
            advance(1, loss=losses[-1])
            every = config.checkpoint_every_steps
            if done == config.train_steps or (every and done % every == 0):
                meta = {"losses": losses, "probe_loss_start": probe_start}
                _save_checkpoint(out_dir, done, tensors, opt, config, meta)
    probe_end = probe_loss(ad, train, config, device)
    _write_adapter(out_dir, ad, train, model, config, {"start": probe_start, "end": probe_end}, losses)
    return out_dir


def step_loss(ad: Adaptation, train: ImageSet, config: AdaptConfig, gen: torch.Generator,
              device: torch.device) -> torch.Tensor:
    """The LDM loss (module header) of one batch, every draw from `gen`, in the order: batch, flips, latents, ε, t."""
    pipe, sched = ad.pipe, ad.noise_scheduler
    idx = batch_indices(train.labels, config.batch_size, config.class_balanced, gen)  # (B,)
    labels = train.labels[idx]
    x = training_pixels(train.images[idx].to(device), ad.size, config.horizontal_flip, gen)  # (B, 3, H, W) in [-1, 1]
    with torch.no_grad():
        z0 = pipe.vae.encode(x).latent_dist.sample(generator=gen).float()  # (B, 4, H/8, W/8) for SD
        z0 = z0 * pipe.vae.config.scaling_factor
    noise = torch.randn(z0.shape, generator=gen).to(device)  # ε
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=gen).to(device)
    zt = sched.add_noise(z0, noise, t)  # √ᾱ_t z_0 + √(1 − ᾱ_t) ε
    target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(z0, noise, t)
    if ad.cond is not None:
        cond = ad.cond[labels.to(device)]  # (B, L, D), encoded once
    else:
        cond = pipe.text_encoder(ad.input_ids[labels].to(device))[0]  # (B, L, D), gradients reach the trained rows
    pred = pipe.unet(zt, t, encoder_hidden_states=cond).sample
    return F.mse_loss(pred.float(), target.float())


@torch.no_grad()
def probe_loss(ad: Adaptation, train: ImageSet, config: AdaptConfig, device: torch.device) -> float:
    """Mean loss over PROBE_BATCHES fixed batches (fixed seeds: the same images, t and ε before and after)."""
    total = sum(float(step_loss(ad, train, config, generator(derive_seed(config.seed, "probe", k)), device))
                for k in range(PROBE_BATCHES))
    return total / PROBE_BATCHES


def _optimizer_step(ad: Adaptation, opt: torch.optim.Optimizer, loss: torch.Tensor, config: AdaptConfig) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(list(ad.trained.values()), config.grad_clip_norm)
    opt.step()


class TrainedTensors:
    """The trained tensors as one "module" for diffbalance.infra.checkpoint: state_dict / load_state_dict by name."""

    def __init__(self, named: dict[str, torch.nn.Parameter]):
        self.named = named

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: p.detach() for k, p in self.named.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.named):
            raise DiffbalanceError("the adapter checkpoint holds other tensors than this adaptation trains",
                                   "use a new output folder, or delete the checkpoint-* folders to start over")
        with torch.no_grad():
            for k, p in self.named.items():
                p.copy_(state[k])


# --- the folder: resume check, checkpoints, final files ------------------------------------------------------------
def run_record(model: str, config: AdaptConfig, train: ImageSet) -> dict:
    """What adapt_config.json pins: a resume (or reuse) needs the same model, options and data."""
    return {"model": model, "config": config.to_dict(), "classes": list(train.class_names),
            "image_shape": list(train.images.shape[1:]), "train_counts": train.counts(),
            "data_sha256": fingerprint(train)}


def check_resume(out_dir: Path, model: str, config: AdaptConfig, train: ImageSet, resume: bool) -> dict:
    """The class names give distinct tokens, and a folder that already holds an adaptation may only be resumed, with
    the same model, options and data; returns the record to write. Writes nothing."""
    if len(train) == 0:
        raise DiffbalanceError(f"the training set {train.source} has no images", "pass a folder with images")
    class_words(train.class_names, config)  # distinct tokens
    record = run_record(model, config, train)
    path = Path(out_dir) / CONFIG_FILE
    if path.exists():
        if not resume:
            raise DiffbalanceError(f"{out_dir} already holds an adaptation",
                                   "pass --resume to continue it, or use a new --out")
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise DiffbalanceError(f"{path} is damaged",
                                   "use a new --out, or delete the folder to start over") from None
        if old != record:
            changed = sorted(k for k in record if old.get(k) != record[k])
            options = sorted(k for k in record["config"] if old.get("config", {}).get(k) != record["config"][k])
            raise DiffbalanceError(
                f"{out_dir} holds an adaptation with another {', '.join(options or changed)}",
                "use a new output folder, or the same model, options and data to resume")
    return record


def _checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints, oldest first."""
    found = [(int(p.name.split("-")[1]), p) for p in out_dir.glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / "state.json").is_file()]
    return sorted(found)


def _save_checkpoint(out_dir: Path, step: int, tensors: TrainedTensors, opt, config: AdaptConfig, meta: dict) -> None:
    save_training_state(out_dir / f"checkpoint-{step}", {"adapter": tensors}, opt,
                        meta={"step": step, "config": config.to_dict(), **meta})
    for _, old in _checkpoints(out_dir)[: -config.keep_checkpoints]:
        doomed = old.with_name(f".{old.name}.tmp-delete-{os.getpid()}")  # renamed first: never half a checkpoint
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _restore_latest(out_dir: Path, tensors: TrainedTensors, opt) -> tuple[int, dict]:
    """Load the newest complete checkpoint; (its step, its meta), or (0, {}) when there is none."""
    found = _checkpoints(out_dir)
    if not found:
        return 0, {}
    state = load_training_state(found[-1][1])
    state.restore({"adapter": tensors}, opt)
    return int(state.meta["step"]), state.meta


def _write_adapter(out_dir: Path, ad: Adaptation, train: ImageSet, model: str, config: AdaptConfig,
                   probe: dict[str, float], losses: list[float]) -> None:
    """The adapter's files (each atomic), then adapter.json: the marker that the folder is complete."""
    names = [str(c) for c in train.class_names]
    if config.method == "lora":
        files = {"lora": save_lora(ad.pipe, out_dir, config).name}
    else:
        folders = class_folders(names)
        save_tokens(out_dir, ad.words, ad.trained["text_encoder.token_vectors"], folders)
        files = {"tokens": {tok: f"{TOKENS_DIR}/{d}/{TI_FILE}" for tok, d in zip(ad.words, folders)}}
    write_json(out_dir / ADAPTER_FILE, {
        "format": 1, "method": config.method, "model": model, "class_names": names,
        "words": dict(zip(names, ad.words)), "prompt_template": config.prompt_template, "files": files,
        "training_size": list(ad.size), "train_steps_done": config.train_steps, "train_counts": train.counts(),
        "probe_loss": probe, "train_loss": losses, "config": config.to_dict()})
