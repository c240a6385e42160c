"""`cfg`: fill minority classes with a class-conditional diffusion model sampled with classifier-free guidance.

Default guidance: w = 7.5 in Ho & Salimans' convention (paper eq. 8, the paper's "scale used by the LDM"); pass
guidance_convention="sd" to read 7.5 as Stable Diffusion's s (= 1 + w, i.e. w = 6.5). The paper's other
setting is w = 0.1. Every image records seed, guidance_w, guidance_convention, guidance_w_ho, sampler, steps and
checkpoint.

Where sampling starts (`init`), with oversampling as the zero point of the real-guided starts:
    noise       x_T ~ N(0, I), the paper's method
    real        a real training image of the class, picked by the image's seed exactly as `oversample` picks its
                copy (rebalance.sources), noised to `strength` and denoised with the class label and guidance over
                the remaining steps (SDEdit, Meng et al. 2022; DA-Fusion, Trabucco et al. 2024; DisCL): the image
                keeps the source's content and gains variation. strength 0 is the source itself (= oversample).
                With `strength_max`, each image draws its strength from [strength, strength_max] by its own seed
                (DA-Fusion's mix of strengths); strength = strength_max = 0 is still oversample.
    translate   a real image of a larger class (rebalance.sources.donor_pool), noised to `strength` and denoised
                toward the target class (M2m, Kim et al. 2020; DBG): head classes carry their diversity to the tail.
Real-guided images also record their source index (and, translated, the source class), the strength and the steps
run. With `synthetic_share` < 1 (generate.base.GenerativeRebalancer) a seeded part of the fill are plain copies.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffbalance.infra.configs import require
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.cfg.config import CFGTrainConfig, Init, Sampler, check_pixel_size
from diffbalance.generate.guidance import Convention, guidance_record, ho_weight
from diffbalance.generate.base import GenerativeRebalancer
from diffbalance.rebalance.base import register
from diffbalance.rebalance.sources import class_pool, donor_pool, picks
from diffbalance.infra.seeding import derive_seed, generator

if TYPE_CHECKING:  # diffusers is imported when a generator is trained or loaded, not to register the method
    from diffbalance.generate.cfg.generator import CFGGenerator


@register(tiny={"checkpoint": "fixture:cfg_generator", "sampler": "ddim", "num_inference_steps": 2},
          bad={"guidance_w": -1.0},
          sweep_knobs=("sampler", "guidance_w", "init", "strength", "synthetic_share", "strength_max"))
@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class CFGRebalancer(GenerativeRebalancer):
    """Class-conditional DDPM + classifier-free guidance (paper Section 3.1), from noise or from real images."""

    name = "cfg"

    checkpoint: str | None = None  # generator folder; None = train one on the imbalanced set into workdir (reused)
    train: CFGTrainConfig = dataclasses.field(default_factory=CFGTrainConfig)  # training options when training here
    guidance_w: float = 7.5  # guidance (paper eq. 8), read in `guidance_convention`
    guidance_convention: Convention = "ho"  # "ho": ε̃ = (1+w)ε_c − wε_u (paper eq. 8) | "sd": the number is s = 1 + w
    sampler: Sampler = "dpmpp-sde"  # ddpm (all T steps) | ddim | dpmpp (DPM-Solver++ 2M, ODE) | dpmpp-sde (its SDE)
    num_inference_steps: int = 20  # denoising steps for ddim/dpmpp (ddpm always runs all T); ≤ T of the generator
    batch_size: int = 64  # images per sampling batch (512+ keeps a GPU busy; images do not depend on it)
    bf16: bool = False  # run the UNet under bf16 autocast while sampling (CUDA only; guidance and sampler stay fp32)
    compile: bool = False  # torch.compile the UNet while training it here (CUDA only; speed, not the weights)
    init: Init = "noise"  # noise (the paper) | real: SDEdit from a real image of the class | translate: of a larger class
    strength: float = 0.5  # init real/translate: the share of the sampler's steps run from the noised source
    # (0: the source itself, i.e. oversampling; 1: every step, from the source noised to t = T)
    strength_max: float | None = None  # init real/translate: when set, each image's strength is drawn uniformly
    # from [strength, strength_max] by its own seed (DA-Fusion mixes 0.25–1.0); None = every image at `strength`

    def validate(self) -> None:
        super().validate()
        self.validate_guided_sampling(steps_example="20")
        require(0 <= self.strength <= 1, "strength", self.strength, "in [0, 1] (0: the real source itself)")
        require(self.strength_max is None or self.strength <= self.strength_max <= 1, "strength_max",
                self.strength_max, "in [strength, 1], or null for one strength")

    def params(self) -> dict[str, Any]:
        """As the base, without `strength` when sampling starts from noise (it changes no image there)."""
        params = super().params()
        if self.init == "noise":
            params.pop("strength")
        if self.init == "noise" or self.strength_max is None:
            params.pop("strength_max")  # changes no image: fill folders and sweeps keep their names
        return params

    def image_strength(self, seed: int) -> float:
        """Image `seed`'s strength: `strength`, or a uniform draw from [strength, strength_max] by its own seed."""
        if self.strength_max is None or self.strength_max == self.strength:
            return self.strength
        u = float(torch.rand((), generator=generator(derive_seed(seed, "strength"))))
        return self.strength + u * (self.strength_max - self.strength)

    def check_data(self, train: ImageSet) -> None:
        """Before a fill writes anything: a given checkpoint matches the data; translation has another class."""
        from diffbalance.generate.cfg.generator import load_generator

        if self.init == "translate" and len(set(train.labels.tolist())) < 2:
            raise DiffbalanceError("init 'translate' needs images of at least 2 classes to translate from",
                                   "use init: real (or noise) on a dataset with one class")
        if self.checkpoint is not None:
            _check_matches(load_generator(self.checkpoint, "cpu"), train)
        elif self.synthetic_share > 0 and self.train.vae is None:  # a pixel generator would be trained here
            check_pixel_size(train.image_size)

    def check(self) -> None:
        """The checkpoint loads as a class-conditional generator, and the step count fits its T."""
        from diffbalance.generate.cfg.generator import load_generator
        from diffbalance.generate.cfg.sampling import sampling_steps

        if self.checkpoint is None:
            timesteps = self.train.num_train_timesteps
        else:
            timesteps = int(load_generator(self.checkpoint, "cpu").noise_schedule["num_train_timesteps"])
        sampling_steps(self.sampler, self.num_inference_steps, timesteps)

    def trained_checkpoint(self, train: ImageSet, workdir: Path, device: torch.device | str = "auto") -> Path:
        """The generator folder a fill of `train` uses: `checkpoint`, or the model trained on `train` into `workdir`
        (trained now unless an earlier call left it finished there)."""
        from diffbalance.generate.cfg.train import train_generator

        if self.checkpoint is not None:
            return Path(self.checkpoint)
        # one folder per training config (and data): other settings never clash with, or reuse, this model
        key = derive_seed(json.dumps(self.train.to_dict(), sort_keys=True), train.counts(), train.images.shape[1:])
        return train_generator(train, self.train, Path(workdir) / f"cfg-generator-{key:016x}", device,
                               compile=self.compile)

    def prepare(self, train: ImageSet, device: torch.device, workdir: Path) -> None:
        from diffbalance.generate.cfg.generator import load_generator
        from diffbalance.generate.cfg.sampling import build_sampler

        self.train_, self.device_ = train, device
        if self.synthetic_share == 0:  # every image a copy (oversampling itself): no generator to train or load
            return
        self.generator_: CFGGenerator = load_generator(self.trained_checkpoint(train, workdir, device), device)
        _check_matches(self.generator_, train)
        # the convention is resolved here, once: the sampler only ever sees Ho's w
        self.sampler_ = build_sampler(self.generator_.unet, self.generator_.noise_schedule, self.sampler,
                                      self.num_inference_steps, ho_weight(self.guidance_w, self.guidance_convention),
                                      self.generator_.image_size, bf16=self.bf16, codec=self.generator_.codec,
                                      channels=self.generator_.channels)
        self.record_ = {**guidance_record(self.guidance_w, self.guidance_convention), "sampler": self.sampler,
                        "steps": self.sampler_.steps, "checkpoint": str(self.generator_.folder),
                        **({"unet_precision": "bf16"} if self.bf16 and device.type == "cuda" else {})}

    def generate(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        from diffbalance.generate.cfg.sampling import start_step

        num_classes = self.generator_.num_classes
        if not 0 <= int(class_index) < num_classes:
            raise DiffbalanceError(f"class {class_index} is outside the generator's classes 0..{num_classes - 1}",
                                   "generate only classes of the dataset it was trained on")
        seeds, labels = [int(s) for s in seeds], [int(class_index)] * len(seeds)
        if self.init == "noise":
            return self.sampler_(labels, seeds), [{"seed": s, **self.record_} for s in seeds]
        pool = (class_pool if self.init == "real" else donor_pool)(self.train_.labels, class_index)
        sources = picks(pool, seeds).tolist()  # the images oversampling would copy (real) / a larger class's
        strengths = [self.image_strength(s) for s in seeds]
        starts = [start_step(self.sampler_.steps, st) for st in strengths]
        images = torch.empty((len(seeds), *self.train_.images.shape[1:]), dtype=torch.uint8)
        for start in sorted(set(starts)):  # one sampler call per start step: every image its own seed's
            ks = [k for k, st in enumerate(starts) if st == start]
            # the forward-process noise and the sampler's draws come from a stream apart from the pick's
            images[ks] = self.sampler_([labels[k] for k in ks], [derive_seed(seeds[k], "init_noise") for k in ks],
                                       self.train_.images[[sources[k] for k in ks]], strengths[ks[0]])
        return images, [{"seed": s, **self.record_, "init": self.init, "strength": st,
                         "steps_run": self.sampler_.steps - start, "source_indices": [p], **self._source_class(p)}
                        for s, p, st, start in zip(seeds, sources, strengths, starts)]

    def _source_class(self, index: int) -> dict[str, Any]:
        if self.init != "translate":
            return {}
        c = int(self.train_.labels[index])
        return {"source_class": c, "source_class_name": self.train_.class_names[c]}


def _check_matches(gen: CFGGenerator, train: ImageSet) -> None:
    have = (gen.num_classes, gen.image_size, gen.channels)
    want = (train.num_classes, train.image_size, train.channels)
    if have != want:
        raise DiffbalanceError(
            f"checkpoint {gen.folder} was trained for {have[0]} classes at {have[1][0]}x{have[1][1]}x{have[2]}, "
            f"this dataset has {want[0]} classes at {want[1][0]}x{want[1][1]}x{want[2]}",
            "use a generator trained on this dataset, or checkpoint=null to train one",
        )
