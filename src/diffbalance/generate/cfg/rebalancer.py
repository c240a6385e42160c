"""`cfg`: fill minority classes with a class-conditional diffusion model sampled with classifier-free guidance.

Default guidance: w = 7.5 in Ho & Salimans' convention (paper eq. 8, the paper's "scale used by the LDM"); pass
guidance_convention="sd" to read 7.5 as Stable Diffusion's s (= 1 + w, i.e. w = 6.5). The paper's other
setting is w = 0.1. Every image records seed, guidance_w, guidance_convention, sampler, steps and checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel

from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.guidance import ho_weight
from diffbalance.generate.cfg.sampling import SAMPLERS, sample, sampling_steps
from diffbalance.generate.cfg.train import GENERATOR_FILE, train_generator
from diffbalance.generate.cfg.unet import null_class
from diffbalance.rebalance.base import Rebalancer, register
from diffbalance.seeding import derive_seed


def resolve_checkpoint(path: str | Path) -> Path:
    """The UNet folder of a generator: `path` itself, or `path/unet` for a training output folder."""
    path = Path(path)
    for folder in (path, path / "unet"):
        if (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file():
            return folder
    raise DiffbalanceError(
        f"no CFG generator checkpoint at {path} (need config.json + diffusion_pytorch_model.safetensors)",
        "pass the folder written by `diffbalance train-generator` (or its unet/ subfolder), or checkpoint=null to train one",
    )


def load_generator(path: str | Path, device: torch.device) -> tuple[UNet2DModel, dict[str, Any]]:
    """(EMA UNet in eval mode on `device`, generator.json) from a checkpoint folder; safetensors only."""
    folder = resolve_checkpoint(path)
    try:
        unet = UNet2DModel.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise DiffbalanceError(f"cannot load CFG generator {folder}: {str(err).splitlines()[0]}", "re-train or re-download it") from None
    info_path = folder / GENERATOR_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text())
    else:  # a bare diffusers UNet: no padding, default DDPM schedule
        size = unet.config.sample_size
        size = [size, size] if isinstance(size, int) else list(size)
        info = {"num_classes": null_class(unet), "image_size": size, "channels": unet.config.in_channels,
                "noise_schedule": CFGTrainConfig().noise_schedule() | {"beta_schedule": "linear"}}
    if unet.config.num_class_embeds is None:
        raise DiffbalanceError(f"{folder} is not a class-conditional UNet (no class embedding)", "use a generator trained by diffbalance")
    return unet.to(device).eval().requires_grad_(False), info


@register
@dataclasses.dataclass(kw_only=True)
class CFGRebalancer(Rebalancer):
    """Class-conditional DDPM + classifier-free guidance (paper Section 3.1)."""

    name = "cfg"
    generative = True

    checkpoint: str | None = None  # generator folder; None = train one on the imbalanced set into workdir (reused)
    train: dict = dataclasses.field(default_factory=dict)  # CFGTrainConfig options when training on the fly
    guidance_w: float = 7.5  # guidance scale, read in `guidance_convention`
    guidance_convention: str = "ho"  # "ho": ε̃ = (1+w)ε_c − wε_u (paper eq. 8) | "sd": s = 1 + w
    sampler: str = "dpmpp-sde"  # "ddpm" (all T steps) | "ddim" | "dpmpp" (DPM-Solver++ 2M, ODE) | "dpmpp-sde" (its SDE variant)
    num_inference_steps: int = 20  # denoising steps for ddim/dpmpp (ddpm always runs all T)
    batch_size: int = 64  # images per sampling batch

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise DiffbalanceError(f"sampler {self.sampler!r} is unknown", f"use one of {', '.join(SAMPLERS)}")
        ho_weight(self.guidance_w, self.guidance_convention)  # validates the convention
        CFGTrainConfig.from_dict(self.train)  # validates the training options now, not after loading data

    def prepare(self, train: ImageSet, device: torch.device, workdir: Path | None = None) -> None:
        self.train_, self.device_ = train, device
        if self.checkpoint is None:
            if workdir is None:
                raise DiffbalanceError("cfg without a checkpoint must train a generator but has no work folder",
                                       "pass a checkpoint, or a workdir to train into")
            config = CFGTrainConfig.from_dict(self.train)
            # one folder per training config (and data): other settings never clash with, or reuse, this model
            key = derive_seed(json.dumps(config.to_dict(), sort_keys=True), train.counts(), train.images.shape[1:])
            path = train_generator(train, config, Path(workdir) / f"cfg-generator-{key:016x}", device)
        else:
            path = resolve_checkpoint(self.checkpoint)
        self.unet_, self.info_ = load_generator(path, device)
        self.checkpoint_path_ = str(path)
        _check_matches(self.info_, train, path)

    def generate(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        num_classes = int(self.info_["num_classes"])
        if not 0 <= int(class_index) < num_classes:
            raise DiffbalanceError(f"class {class_index} is outside the generator's classes 0..{num_classes - 1}",
                                   "generate only classes of the dataset it was trained on")
        schedule = self.info_["noise_schedule"]
        steps = sampling_steps(self.sampler, self.num_inference_steps, schedule)
        images = []
        for k in range(0, len(seeds), self.batch_size):
            chunk = list(seeds[k : k + self.batch_size])
            images.append(sample(
                self.unet_, self.sampler, [int(class_index)] * len(chunk), chunk, self.guidance_w, self.num_inference_steps,
                null_class(self.unet_), noise_schedule=schedule, guidance_convention=self.guidance_convention,
                image_size=tuple(self.info_["image_size"]),
            ))
        record = {"guidance_w": self.guidance_w, "guidance_convention": self.guidance_convention, "sampler": self.sampler,
                  "steps": steps, "checkpoint": self.checkpoint_path_}
        return torch.cat(images), [{"seed": int(s), **record} for s in seeds]


def _check_matches(info: dict[str, Any], train: ImageSet, path: Path) -> None:
    have = (int(info["num_classes"]), tuple(info["image_size"]), int(info["channels"]))
    want = (train.num_classes, train.image_size, train.channels)
    if have != want:
        raise DiffbalanceError(
            f"checkpoint {path} was trained for {have[0]} classes at {have[1][0]}x{have[1][1]}x{have[2]}, "
            f"this dataset has {want[0]} classes at {want[1][0]}x{want[1][1]}x{want[2]}",
            "use a generator trained on this dataset, or checkpoint=null to train one",
        )
