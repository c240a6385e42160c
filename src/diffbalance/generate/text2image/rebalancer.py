"""Rebalancers `ldm` and `ldm-img2img`: a pretrained text-to-image diffusion model fills the minority classes.

Paper, Method 2 (Section 3.2): Stable Diffusion (an LDM, eq. 9) prompted with the class name, guidance 7.5,
512×512 output downscaled to the dataset's 32×32. The paper names no model version, sampler or step count;
diffbalance's defaults: SD 1.5, DPM-Solver++ (multistep), 25 steps. Guidance is the one knob of every diffusion
rebalancer (generate.guidance): `guidance_w` read in `guidance_convention`; the default w = 6.5 ("ho") is diffusers'
guidance_scale s = 1 + w = 7.5, the paper's setting read as Stable Diffusion's s.

`ldm-img2img` (SDEdit; DA-Fusion's real-guided augmentation) noises a real image of the class to
`strength` and denoises it with the class prompt, so the fill stays close to the dataset's own look.

Per-image seeds: image k gets its own `torch.Generator` seeded with seeds[k] (CPU generators, so the
starting noise is the same on any device), hence the same image at any batch size and after a resume.

Adapted to the dataset (generate.adapt): `adapter` names a folder written by `diffbalance adapt`, or `adapt` trains
one on the imbalanced set into the work folder first (one folder per model + options + data, reused, as `cfg` trains
its generator). A LoRA adapter is loaded into the pipeline (`load_lora_weights`); learned tokens are loaded
(`load_textual_inversion`) and replace the class name in the prompts ("a photo of a <cat>"). Each image records the
adapter folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from diffbalance.infra import distributed
from diffbalance.infra.configs import require
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.adapt.config import AdaptConfig
from diffbalance.generate.adapt.data import fingerprint
from diffbalance.generate.adapt.files import apply_adapter, check_classes, read_adapter
from diffbalance.generate.adapt.train import adapt_pipeline
from diffbalance.generate.guidance import Convention, guidance_record, sd_scale
from diffbalance.generate.text2image.config import DEFAULT_MODEL, DType, LoadSpec, Pipeline, Scheduler, resolve_dtype
from diffbalance.generate.loading import read_index
from diffbalance.generate.text2image.pipeline import WHAT, default_size, load_pipeline, pipeline_class, size_multiple
from diffbalance.generate.text2image.postprocess import canvas_size, to_dataset_images, to_pipeline_images
from diffbalance.generate.text2image.prompts import check_overrides, class_prompt
from diffbalance.generate.base import GenerativeRebalancer
from diffbalance.rebalance.base import register
from diffbalance.infra.seeding import derive_seed, generator, generators


@register(tiny={"model": "fixture:tiny_sd", "num_inference_steps": 2}, bad={"guidance_w": -1.0},
          sweep_knobs=("guidance_w", "synthetic_share"))
@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class TextToImageRebalancer(GenerativeRebalancer):
    """Fill images from a pretrained text-to-image diffusion model prompted with the class name."""

    name: ClassVar[str] = "ldm"
    generative: ClassVar[bool] = True
    task: ClassVar[str] = "text2image"

    batch_size: int = 8  # images per pipeline call (SD 1.5 at 512² in fp16: ~8 fit in 12 GB)
    model: str = DEFAULT_MODEL  # Hugging Face id or local diffusers folder (safetensors weights only)
    pipeline: Pipeline = "auto"  # auto: AutoPipeline (SD, SDXL, SD-Turbo, SDXL-Turbo) | sd: StableDiffusion*Pipeline
    prompt_template: str = "{class}"  # the paper's bare class name; e.g. "a photo of a {class}"
    class_prompts: dict[str, str] = dataclasses.field(default_factory=dict)  # class name → its own prompt
    negative_prompt: str = ""  # empty: none
    guidance_w: float = 6.5  # guidance (paper eq. 8) in `guidance_convention`; 6.5 "ho" = s 7.5 (paper); 0 for *-Turbo
    guidance_convention: Convention = "ho"  # "ho": the number is Ho's w | "sd": it is Stable Diffusion's s = 1 + w
    num_inference_steps: int = 25  # sampler steps (1–4 for *-Turbo)
    scheduler: Scheduler = "dpmpp"  # dpmpp (DPM-Solver++ multistep) | ddim | euler_a | default (the model's own)
    dtype: DType = "auto"  # auto: float16 on CUDA, float32 on CPU | float32 | float16 | bfloat16
    height: int | None = None  # generated size in pixels; None: the model's own (512 for SD 1.5)
    width: int | None = None
    clean_class_names: bool = True  # "pickup_truck" → "pickup truck" in prompts
    safety_checker: bool = True  # False drops the model's NSFW checker (flagged images come out black)
    adapter: str | None = None  # folder written by `diffbalance adapt` (LoRA or learned tokens); None: the base model
    adapt: AdaptConfig | None = None  # adapt `model` to the imbalanced set first, into the work folder (reused)

    def validate(self) -> None:
        super().validate()
        self.validate_guided_sampling(steps_example="25 (1–4 for *-Turbo models)")
        for name in ("height", "width"):
            value = getattr(self, name)
            require(value is None or (value >= 8 and value % 8 == 0), name, value,
                    "a multiple of 8 (leave it unset to use the model's own size)")
        require("{class}" in self.prompt_template, "prompt_template", self.prompt_template,
                "a text with {class}, e.g. 'a photo of a {class}'")
        require(self.adapter is None or self.adapt is None, "adapt", self.adapt,
                "null when `adapter` names a folder (use one adapter, or train one here)")

    # --- prepare -------------------------------------------------------------------------------------
    def check(self) -> None:
        """The model is a local diffusers folder with safetensors weights, or a Hub id that can be reached."""
        read_index(pipeline_class(self.pipeline, self.task), self.model, WHAT)
        if self.adapter is not None:
            read_adapter(self.adapter, self.model)  # a finished adapter, trained on this model

    def check_data(self, train: ImageSet) -> None:
        """A given adapter knows every class of the data."""
        if self.adapter is not None:
            check_classes(read_adapter(self.adapter, self.model), train.class_names, Path(self.adapter))

    def prepare(self, train: ImageSet, device: torch.device, workdir: Path) -> None:
        super().prepare(train, device, workdir)
        self.guidance_scale_ = sd_scale(self.guidance_w, self.guidance_convention)  # diffusers' s, resolved once
        check_overrides(self.class_prompts, train.class_names)
        self.adapter_ = self._adapter_folder(train, device, workdir)  # None: the base model
        info = read_adapter(self.adapter_, self.model) if self.adapter_ else None
        if info:
            check_classes(info, train.class_names, self.adapter_)
        self.prompts_ = [
            class_prompt(c, self.prompt_template, self.class_prompts, self.clean_class_names,
                         word=info["words"][str(c)] if info else None)
            for c in train.class_names
        ]
        spec = LoadSpec(self.model, self.pipeline, self.task, self.scheduler, resolve_dtype(self.dtype, device),
                        self.safety_checker)
        loaded = tuple(getattr(self, k, None) for k in ("spec_", "pipe_device_", "pipe_adapter_"))
        if loaded != (spec, device, self.adapter_):  # once per spec and adapter (fit_resample then fill reuse it)
            self.pipe_ = load_pipeline(spec, device)
            if info:
                apply_adapter(self.pipe_, self.adapter_, info)
            self.spec_, self.pipe_device_, self.pipe_adapter_ = spec, device, self.adapter_
        self.size_ = self._pipeline_size(train)

    def _adapter_folder(self, train: ImageSet, device: torch.device, workdir: Path) -> Path | None:
        """The adapter to load: the given folder, or one adapted here (one folder per model, options and data)."""
        if self.adapter is not None:
            return Path(self.adapter).expanduser()
        if self.adapt is None:
            return None
        key = derive_seed(json.dumps({"model": self.model, "adapt": self.adapt.to_dict()}, sort_keys=True),
                          fingerprint(train), *train.class_names)
        folder = Path(workdir) / f"adapter-{key:016x}"
        # under torchrun rank 0 adapts alone (one process trains it), the others wait for the folder
        return distributed.on_main(lambda: adapt_pipeline(train, self.model, self.adapt, folder, device))

    def _pipeline_size(self, train: ImageSet) -> tuple[int, int]:
        h, w = default_size(self.pipe_)
        return (self.height or h, self.width or w)

    # --- generate ------------------------------------------------------------------------------------
    def generate(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        images, records = self.sample(class_index, seeds)
        try:
            return to_dataset_images(images, self.train_.image_size, self.train_.channels), records
        except FloatingPointError:
            raise DiffbalanceError(
                f"{self.model} produced NaN images for class {self.train_.class_names[class_index]!r}",
                "use dtype: float32 (float16 overflows in some VAEs)",
            ) from None

    def sample(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Images at the pipeline's size, float (B, 3, H, W) in [0, 1], and one record per image."""
        return self._run(class_index, seeds, height=self.size_[0], width=self.size_[1])

    def _run(self, class_index: int, seeds: Sequence[int], **task_kwargs) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        n = len(seeds)
        out = self.pipe_(
            prompt=[self.prompts_[class_index]] * n,
            negative_prompt=[self.negative_prompt] * n if self.negative_prompt else None,
            generator=generators(seeds),  # one per image: image k depends on seeds[k] only
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale_,  # s = 1 + w; s ≤ 1 runs the conditional model alone
            output_type="pt",
            **task_kwargs,
        )
        flags = getattr(out, "nsfw_content_detected", None) or [None] * n
        records = [{**self._record(class_index, s), "nsfw_flagged": f} for s, f in zip(seeds, flags)]
        return out.images, records

    def _record(self, class_index: int, seed: int) -> dict[str, Any]:
        return {
            "prompt": self.prompts_[class_index],
            "negative_prompt": self.negative_prompt,
            "seed": seed,
            "model": self.model,
            **guidance_record(self.guidance_w, self.guidance_convention),
            "guidance_scale": self.guidance_scale_,  # what diffusers was given
            "steps": self.num_inference_steps,
            "scheduler": type(self.pipe_.scheduler).__name__ if self.scheduler == "default" else self.scheduler,
            "generated_size": list(self.size_),
            **({"adapter": str(self.adapter_)} if self.adapter_ else {}),
        }


@register(tiny={"model": "fixture:tiny_sd", "num_inference_steps": 2}, bad={"strength": 0.0},
          sweep_knobs=("guidance_w", "strength", "synthetic_share"))
@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class ImageToImageRebalancer(TextToImageRebalancer):
    """Real-guided fill (SDEdit / DA-Fusion): a real image of the class, upscaled to the pipeline's size,
    noised to `strength` and denoised with the class prompt. The source is drawn with the image's own seed."""

    name: ClassVar[str] = "ldm-img2img"
    task: ClassVar[str] = "image2image"

    strength: float = 0.5  # fraction of the noise schedule applied to the real image (0: copy, 1: ignore it)

    def validate(self) -> None:
        super().validate()
        require(0 < self.strength <= 1, "strength", self.strength, "in (0, 1], e.g. 0.5")
        require(int(self.num_inference_steps * self.strength) >= 1, "strength", self.strength,
                f"large enough that num_inference_steps × strength ≥ 1 (now {self.num_inference_steps} × "
                f"{self.strength} runs no step; raise either)")

    def _pipeline_size(self, train: ImageSet) -> tuple[int, int]:
        if self.height or self.width:
            return super()._pipeline_size(train)
        # keep the data's aspect ratio, so the downscale back crops nothing
        return canvas_size(train.image_size, min(default_size(self.pipe_)), size_multiple(self.pipe_))

    def source_index(self, class_index: int, seed: int) -> int:
        """Index (in the training set) of the real image that fill image `seed` starts from."""
        pool = torch.nonzero(self.train_.labels == class_index).flatten()
        if len(pool) == 0:
            raise DiffbalanceError(
                f"class {self.train_.class_names[class_index]!r} has no real images to start img2img from",
                "use method ldm for classes without images",
            )
        pick = torch.randint(len(pool), (1,), generator=generator(derive_seed(seed, "source"))).item()
        return int(pool[pick])

    def sample(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        sources = [self.source_index(class_index, s) for s in seeds]
        real = to_pipeline_images(self.train_.images[sources], self.size_)  # (B, 3, H, W) in [0, 1]
        images, records = self._run(class_index, seeds, image=real.to(self.device_), strength=self.strength)
        for record, source in zip(records, sources):
            record.update(strength=self.strength, source_index=source)
        return images, records
