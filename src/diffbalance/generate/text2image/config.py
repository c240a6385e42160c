"""Choices of the text-to-image rebalancers and the resolved loading spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from diffbalance.generate.schedulers import sampler_names
from diffbalance.infra.device import fast_gpu_path

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
Pipeline = Literal["auto", "sd"]  # auto: diffusers' AutoPipeline (SD, SDXL, SD-Turbo, ...); sd: StableDiffusion*Pipeline
Scheduler = Literal[sampler_names("ldm")]  # type: ignore[valid-type]  # generate.schedulers; default: the model's own
DType = Literal["auto", "float32", "float16", "bfloat16"]
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LoadSpec:
    """Everything that decides which pipeline object is loaded (two equal specs → one load)."""

    model: str  # Hugging Face id or local folder
    pipeline: Pipeline
    task: Literal["text2image", "image2image"]
    scheduler: Scheduler
    torch_dtype: torch.dtype  # weights and activations
    safety_checker: bool  # False: drop the model's safety checker (by option only)


def resolve_dtype(name: DType, device: torch.device) -> torch.dtype:
    """auto: float16 on CUDA (the usual SD inference precision), float32 on the CPU."""
    if DTYPES[name] is not None:
        return DTYPES[name]
    return torch.float16 if fast_gpu_path(device) else torch.float32
