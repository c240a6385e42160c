"""Options of the text-to-image rebalancers: allowed values, checks, and the resolved loading spec."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffbalance.device import fast_gpu_path
from diffbalance.errors import DiffbalanceError

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PIPELINES = ("auto", "sd")  # auto: diffusers' AutoPipeline (SD, SDXL, SD-Turbo, ...); sd: StableDiffusion*Pipeline
SCHEDULERS = ("dpmpp", "ddim", "euler_a", "default")  # default: the one saved with the model
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LoadSpec:
    """Everything that decides which pipeline object is loaded (two equal specs → one load)."""

    model: str  # Hugging Face id or local folder
    pipeline: str  # "auto" | "sd"
    task: str  # "text2image" | "image2image"
    scheduler: str  # one of SCHEDULERS
    torch_dtype: torch.dtype  # weights and activations
    safety_checker: bool  # False: drop the model's safety checker (by option only)


def check_choice(option: str, value, allowed) -> None:
    if value not in allowed:
        raise DiffbalanceError(f"ldm option {option}={value!r} is not supported", f"use one of {', '.join(map(str, allowed))}")


def check_options(*, pipeline: str, scheduler: str, dtype: str, num_inference_steps: int, guidance_scale: float,
                  height: int | None, width: int | None, prompt_template: str) -> None:
    """One-line errors for option values that cannot work (before any model is loaded)."""
    check_choice("pipeline", pipeline, PIPELINES)
    check_choice("scheduler", scheduler, SCHEDULERS)
    check_choice("dtype", dtype, tuple(DTYPES))
    if int(num_inference_steps) < 1:
        raise DiffbalanceError(f"num_inference_steps={num_inference_steps} must be ≥ 1", "use e.g. 25 (1–4 for *-Turbo models)")
    if guidance_scale < 0:
        raise DiffbalanceError(f"guidance_scale={guidance_scale} must be ≥ 0", "use 7.5 (the paper), or 0 for *-Turbo models")
    for name, value in (("height", height), ("width", width)):
        if value is not None and (int(value) < 8 or int(value) % 8):
            raise DiffbalanceError(f"{name}={value} must be a multiple of 8", "leave it unset to use the model's own size")
    if "{class}" not in prompt_template:
        raise DiffbalanceError(f"prompt_template {prompt_template!r} lacks {{class}}", "write e.g. 'a photo of a {class}'")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: float16 on CUDA (the usual SD inference precision), float32 on the CPU."""
    if DTYPES[name] is not None:
        return DTYPES[name]
    return torch.float16 if fast_gpu_path(device) else torch.float32
