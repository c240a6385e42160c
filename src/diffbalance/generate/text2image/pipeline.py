"""Load a text-to-image diffusers pipeline through the shared loader (generate.loading) and swap in the chosen
scheduler from the shared factory (generate.schedulers), built from the model's own scheduler config."""

from __future__ import annotations

import logging

import torch

from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.loading import dtype_kwarg, error_text, load_pretrained, read_index
from diffbalance.generate.schedulers import make_scheduler
from diffbalance.generate.text2image.config import LoadSpec

logger = logging.getLogger(__name__)
WHAT = "text-to-image model"


def pipeline_class(pipeline: str, task: str):
    import diffusers

    names = {
        ("auto", "text2image"): "AutoPipelineForText2Image",
        ("auto", "image2image"): "AutoPipelineForImage2Image",
        ("sd", "text2image"): "StableDiffusionPipeline",
        ("sd", "image2image"): "StableDiffusionImg2ImgPipeline",
    }
    return getattr(diffusers, names[pipeline, task])


def load_pipeline(spec: LoadSpec, device: torch.device):
    """The pipeline of `spec` on `device`, its scheduler swapped and its progress bar off."""
    cls = pipeline_class(spec.pipeline, spec.task)
    index = read_index(cls, spec.model, WHAT)  # model_index.json only: fails fast when offline
    kwargs = {}
    has_checker = index.get("safety_checker") not in (None, [None, None])  # SDXL, Turbo: none to drop
    if not spec.safety_checker and has_checker:
        logger.warning("safety checker disabled by option")
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = load_pretrained(cls, spec.model, WHAT, **{dtype_kwarg(): spec.torch_dtype}, **kwargs)
    except DiffbalanceError:  # already one line (it is a ValueError too)
        raise
    except ValueError as err:  # e.g. AutoPipeline has no text2image/img2img variant of this model class
        raise DiffbalanceError(
            f"cannot load {spec.model} as a {spec.task} pipeline ({error_text(err)})",
            "use a Stable Diffusion-family model, or pipeline: sd",
        ) from err
    pipe.scheduler = make_scheduler(spec.scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)  # store.fill draws the one progress bar
    return pipe.to(device)


def default_size(pipe) -> tuple[int, int]:
    """The pipeline's native (H, W): latent sample size × VAE factor (512² for SD 1.5, 1024² for SDXL)."""
    side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    return side, side


def size_multiple(pipe) -> int:
    """Output sides must be multiples of this: VAE factor × the UNet's total downsampling."""
    return int(pipe.vae_scale_factor) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
