"""`cfg`: fill minority classes with a class-conditional diffusion model sampled with classifier-free guidance.

Default guidance: w = 7.5 in Ho & Salimans' convention (paper eq. 8, the paper's "scale used by the LDM"); pass
guidance_convention="sd" to read 7.5 as Stable Diffusion's s (= 1 + w, i.e. w = 6.5). The paper's other
setting is w = 0.1. Every image records seed, guidance_w, guidance_convention, guidance_w_ho, sampler, steps and
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diffbalance.configs import require
from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.generator import CFGGenerator, load_generator
from diffbalance.generate.cfg.sampling import Sampler, build_sampler, sampling_steps
from diffbalance.generate.cfg.train import train_generator
from diffbalance.generate.guidance import GUIDANCE_EXPECTED, Convention, guidance_record, ho_weight
from diffbalance.rebalance.base import Rebalancer, register
from diffbalance.seeding import derive_seed


@register
@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class CFGRebalancer(Rebalancer):
    """Class-conditional DDPM + classifier-free guidance (paper Section 3.1)."""

    name = "cfg"
    generative = True

    checkpoint: str | None = None  # generator folder; None = train one on the imbalanced set into workdir (reused)
    train: CFGTrainConfig = dataclasses.field(default_factory=CFGTrainConfig)  # training options when training here
    guidance_w: float = 7.5  # guidance (paper eq. 8), read in `guidance_convention`
    guidance_convention: Convention = "ho"  # "ho": ε̃ = (1+w)ε_c − wε_u (paper eq. 8) | "sd": the number is s = 1 + w
    sampler: Sampler = "dpmpp-sde"  # ddpm (all T steps) | ddim | dpmpp (DPM-Solver++ 2M, ODE) | dpmpp-sde (its SDE)
    num_inference_steps: int = 20  # denoising steps for ddim/dpmpp (ddpm always runs all T); ≤ T of the generator
    batch_size: int = 64  # images per sampling batch (512+ keeps a GPU busy; images do not depend on it)
    bf16: bool = False  # run the UNet under bf16 autocast while sampling (CUDA only; guidance and sampler stay fp32)
    compile: bool = False  # torch.compile the UNet while training it here (CUDA only; speed, not the weights)

    def validate(self) -> None:
        super().validate()
        require(self.num_inference_steps >= 1, "num_inference_steps", self.num_inference_steps, "≥ 1, e.g. 20")
        require(ho_weight(self.guidance_w, self.guidance_convention) >= 0, "guidance_w", self.guidance_w,
                GUIDANCE_EXPECTED)

    def check(self) -> None:
        """The checkpoint loads as a class-conditional generator, and the step count fits its T."""
        if self.checkpoint is None:
            timesteps = self.train.num_train_timesteps
        else:
            timesteps = int(load_generator(self.checkpoint, "cpu").noise_schedule["num_train_timesteps"])
        sampling_steps(self.sampler, self.num_inference_steps, timesteps)

    def prepare(self, train: ImageSet, device: torch.device, workdir: Path) -> None:
        self.train_, self.device_ = train, device
        if self.checkpoint is None:
            # one folder per training config (and data): other settings never clash with, or reuse, this model
            key = derive_seed(json.dumps(self.train.to_dict(), sort_keys=True), train.counts(), train.images.shape[1:])
            path = train_generator(train, self.train, Path(workdir) / f"cfg-generator-{key:016x}", device,
                                   compile=self.compile)
        else:
            path = Path(self.checkpoint)
        self.generator_: CFGGenerator = load_generator(path, device)
        _check_matches(self.generator_, train)
        # the convention is resolved here, once: the sampler only ever sees Ho's w
        self.sampler_ = build_sampler(self.generator_.unet, self.generator_.noise_schedule, self.sampler,
                                      self.num_inference_steps, ho_weight(self.guidance_w, self.guidance_convention),
                                      self.generator_.image_size, bf16=self.bf16)
        self.record_ = {**guidance_record(self.guidance_w, self.guidance_convention), "sampler": self.sampler,
                        "steps": self.sampler_.steps, "checkpoint": str(self.generator_.folder),
                        **({"unet_precision": "bf16"} if self.bf16 and device.type == "cuda" else {})}

    def generate(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        num_classes = self.generator_.num_classes
        if not 0 <= int(class_index) < num_classes:
            raise DiffbalanceError(f"class {class_index} is outside the generator's classes 0..{num_classes - 1}",
                                   "generate only classes of the dataset it was trained on")
        images = []
        for k in range(0, len(seeds), self.batch_size):
            chunk = [int(s) for s in seeds[k : k + self.batch_size]]
            images.append(self.sampler_([int(class_index)] * len(chunk), chunk))
        return torch.cat(images), [{"seed": int(s), **self.record_} for s in seeds]


def _check_matches(gen: CFGGenerator, train: ImageSet) -> None:
    have = (gen.num_classes, gen.image_size, gen.channels)
    want = (train.num_classes, train.image_size, train.channels)
    if have != want:
        raise DiffbalanceError(
            f"checkpoint {gen.folder} was trained for {have[0]} classes at {have[1][0]}x{have[1][1]}x{have[2]}, "
            f"this dataset has {want[0]} classes at {want[1][0]}x{want[1][1]}x{want[2]}",
            "use a generator trained on this dataset, or checkpoint=null to train one",
        )
