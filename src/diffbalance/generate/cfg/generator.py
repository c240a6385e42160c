"""The trained CFG generator on disk: a diffusers pipeline folder that stock diffusers loads, plus diffbalance's
own metadata.

    model_index.json   DDPMPipeline (unet + scheduler); written last: its presence = a finished generator
    unet/              the EMA UNet2DModel (save_pretrained: config.json + diffusion_pytorch_model.safetensors)
    scheduler/         the training DDPMScheduler: the forward process (β schedule, T) the model was trained with
    generator.json     class names, image size (samples are centre-cropped to it), channels, counts, train config
    vae/               a latent generator's AutoencoderKL (generate.cfg.latent): the UNet works on its latents

    DiffusionPipeline.from_pretrained(folder)                        # plain diffusers
    load_generator(folder, device)                                   # diffbalance: UNet + forward process + metadata

Folders written before this layout (`unet/` holding generator.json, no model_index.json) still load (cfg/legacy.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
from diffusers import DDPMScheduler, UNet2DModel

from diffbalance.infra.atomic import atomic_path, write_json
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import DeviceLike, entry_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.cfg import legacy
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.unet import null_class, unet_sample_size
from diffbalance.generate.loading import load_pretrained, read_index
from diffbalance.generate.schedulers import forward_process

GENERATOR_FILE, INDEX_FILE = "generator.json", "model_index.json"
WHAT = "CFG generator"


def generator_info(train: ImageSet, config: CFGTrainConfig, unet: UNet2DModel, step: int,
                   history: list[dict] | None = None, latent: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a sampler needs besides the weights and the scheduler: classes, sizes, p_uncond, the step; and the
    training curve so far (`history`: {"step", "loss", "lr"} records, generate.cfg.train) when given."""
    return {
        "method": "cfg",
        "class_names": list(train.class_names),
        "num_classes": train.num_classes,
        "null_class": null_class(unet),
        "image_size": list(train.image_size),  # samples are centre-cropped back to this
        "sample_size": list(unet_sample_size(unet)),  # the (padded) size the UNet works at
        **({"latent": latent} if latent else {}),  # the VAE's space the UNet works in (generate.cfg.latent)
        "channels": train.channels,
        "p_uncond": config.p_uncond,
        "model_size": config.model_size,
        "block_out_channels": list(unet.config.block_out_channels),  # the size's levels, deepened by resolution
        "parameters": sum(p.numel() for p in unet.parameters()),
        "train_steps_done": step,
        "train_config": config.to_dict(),
        "train_images": len(train),
        "train_counts": train.counts(),
        **({"history": history} if history is not None else {}),
    }


def model_index() -> dict[str, Any]:
    """model_index.json of a DDPMPipeline, so stock diffusers builds it."""
    return {"_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}


def save_generator(folder: Path, unet: UNet2DModel | None, scheduler: DDPMScheduler, info: dict[str, Any],
                   vae: Any = None) -> None:
    """Write the pipeline folder (unet/ skipped when None: already there; vae/ for a latent generator);
    model_index.json last."""
    folder = Path(folder)
    if vae is not None:
        with atomic_path(folder / "vae") as tmp:
            vae.save_pretrained(tmp, safe_serialization=True)
    if unet is not None:
        with atomic_path(folder / "unet") as tmp:
            unet.save_pretrained(tmp, safe_serialization=True)
    with atomic_path(folder / "scheduler") as tmp:
        scheduler.save_pretrained(tmp)
    write_json(folder / GENERATOR_FILE, info)
    write_json(folder / INDEX_FILE, model_index())


def is_finished(folder: Path) -> bool:
    return (Path(folder) / INDEX_FILE).is_file()


@dataclass(frozen=True, eq=False)
class CFGGenerator:
    """A loaded generator: what the sampler needs."""

    unet: UNet2DModel  # EMA weights, eval mode, no gradients
    noise_schedule: dict[str, Any]  # the training forward process (generate.schedulers.FORWARD_PROCESS_KEYS)
    info: dict[str, Any]  # generator.json
    folder: Path  # the folder it was loaded from (recorded with every image)
    codec: Any = None  # a latent generator's VAE (generate.cfg.latent.LatentCodec); None: pixel space

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.info["image_size"])

    @property
    def channels(self) -> int:
        return int(self.info["channels"])


def resolve_checkpoint(path: str | Path) -> Path:
    """The generator folder of `path`: a pipeline folder, or (older layouts) a UNet folder or its parent."""
    path = Path(path)
    if is_finished(path):
        return path
    if path.name == "unet" and is_finished(path.parent) and not (path / GENERATOR_FILE).is_file():
        return path.parent  # the unet/ of a pipeline folder: its scheduler/ holds the forward process
    found = legacy.unet_folder(path)
    if found is None:
        raise DiffbalanceError(
            f"no CFG generator checkpoint at {path} (need model_index.json, or an older unet/ folder)",
            "pass the folder written by `diffbalance train-generator`, or checkpoint=null to train one",
        )
    return found


def load_generator(path: str | Path, device: DeviceLike = "auto") -> CFGGenerator:
    """The generator at `path` (any layout) on `device`; safetensors only."""
    device = entry_device(device)
    folder = resolve_checkpoint(path)
    if is_finished(folder):
        read_index(diffusers.DDPMPipeline, folder, WHAT)  # the pipeline folder holds safetensors weights
        unet = _load_unet(folder / "unet")
        try:
            schedule = forward_process(DDPMScheduler.load_config(str(folder / "scheduler")))
            info = json.loads((folder / GENERATOR_FILE).read_text())
            _ = int(info["num_classes"]), list(info["image_size"]), int(info["channels"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DiffbalanceError(f"CFG generator {folder} has a damaged {GENERATOR_FILE} or scheduler/ "
                                   f"({type(err).__name__})", "re-train it with `diffbalance train-generator`") from None
    else:
        unet = _load_unet(folder)
        try:
            info, schedule = legacy.read_info(folder, unet)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DiffbalanceError(f"CFG generator {folder} has a damaged {GENERATOR_FILE} ({type(err).__name__})",
                                   "re-train it with `diffbalance train-generator`") from None
    if unet.config.num_class_embeds is None:
        raise DiffbalanceError(f"{folder} is not a class-conditional UNet (no class embedding)",
                               "use a generator trained by diffbalance")
    codec = None
    if (folder / "vae").is_dir():  # a latent generator: its VAE is part of the folder
        from diffbalance.generate.cfg.latent import LatentCodec, check_fits

        codec = LatentCodec.load(folder / "vae", device)
        check_fits(codec, int(unet.config.in_channels), folder)
    return CFGGenerator(unet.to(device).eval().requires_grad_(False), schedule, info, folder, codec)


def _load_unet(folder: Path) -> UNet2DModel:
    try:
        return load_pretrained(UNet2DModel, folder, WHAT, low_cpu_mem_usage=False)
    except DiffbalanceError:  # already one line (it is a ValueError too)
        raise
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        raise DiffbalanceError(f"cannot load CFG generator {folder}: {str(err).splitlines()[0]}",
                               "re-train or re-download it") from None
