"""Load a diffusers pipeline safely: safetensors only, no remote code, a one-line error when offline.

Both rebalancers load through `load_pipeline`, which is the plain `from_pretrained` of a Hugging Face id or
a local folder, so the tiny test pipeline and Stable Diffusion 1.5 take exactly the same path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from diffbalance.errors import DiffbalanceError
from diffbalance.generate.text2image.config import LoadSpec

logger = logging.getLogger(__name__)


def _dtype_kwarg() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (≥ 0.36); use whichever this version takes without warning."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (exists only with `dtype`)

        return "dtype"
    except ImportError:
        return "torch_dtype"


def _pipeline_class(pipeline: str, task: str):
    import diffusers

    names = {
        ("auto", "text2image"): "AutoPipelineForText2Image",
        ("auto", "image2image"): "AutoPipelineForImage2Image",
        ("sd", "text2image"): "StableDiffusionPipeline",
        ("sd", "image2image"): "StableDiffusionImg2ImgPipeline",
    }
    return getattr(diffusers, names[pipeline, task])


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "not reachable / not there" (diffusers wraps most in OSError; the rest vary by version)."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub import errors as hub_errors

        errors += [hub_errors.HfHubHTTPError, hub_errors.HFValidationError]
    except (ImportError, AttributeError):
        pass
    for module, name in (("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _not_loadable(model: str) -> DiffbalanceError:
    return DiffbalanceError(
        f"cannot load text-to-image model {model}: not a local folder and not downloadable (offline?)",
        f"download it with `huggingface-cli download {model}` / pass a local folder with --model or set HF_HOME",
    )


def _no_safetensors(model: str) -> DiffbalanceError:
    return DiffbalanceError(
        f"text-to-image model {model} has no safetensors weights (diffbalance never loads pickled .bin/.ckpt files)",
        "convert it with diffusers' `save_pretrained(folder, safe_serialization=True)` or use a safetensors release",
    )


def check_local_folder(model: str) -> None:
    """A local folder must be a diffusers model folder with safetensors weights."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return
    if not (folder / "model_index.json").is_file():
        raise DiffbalanceError(
            f"{folder} is not a diffusers model folder (no model_index.json)",
            "pass a folder saved with `save_pretrained`, or a Hugging Face id",
        )
    if not any(folder.rglob("*.safetensors")):
        raise _no_safetensors(model)


def load_pipeline(spec: LoadSpec, device: torch.device):
    """The pipeline of `spec` on `device`, its scheduler swapped and its progress bar off."""
    from diffusers import DiffusionPipeline

    check_local_folder(spec.model)
    model = str(Path(spec.model).expanduser()) if Path(spec.model).expanduser().is_dir() else spec.model
    try:
        index = DiffusionPipeline.load_config(model)  # model_index.json only: fails fast when offline
    except _hub_errors() as err:
        raise _not_loadable(spec.model) from err
    kwargs = {}
    has_checker = index.get("safety_checker") not in (None, [None, None])  # SDXL, Turbo: none to drop
    if not spec.safety_checker and has_checker:
        logger.warning("safety checker disabled by option")
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        # use_safetensors=True: never unpickle weights; no trust_remote_code / custom_pipeline: never run hub code
        pipe = _pipeline_class(spec.pipeline, spec.task).from_pretrained(
            model, **{_dtype_kwarg(): spec.torch_dtype}, use_safetensors=True, **kwargs
        )
    except _hub_errors() as err:
        if "safetensors" in str(err):
            raise _no_safetensors(spec.model) from err
        if Path(model).is_dir():
            raise DiffbalanceError(f"cannot load model folder {model}: {pipeline_error_text(err)}",
                                   "re-save it with `save_pretrained`") from err
        raise _not_loadable(spec.model) from err
    except ValueError as err:  # e.g. AutoPipeline has no text2image/img2img variant of this model class
        raise DiffbalanceError(
            f"cannot load {spec.model} as a {spec.task} pipeline ({pipeline_error_text(err)})",
            "use a Stable Diffusion-family model, or pipeline: sd",
        ) from err
    pipe.scheduler = make_scheduler(spec.scheduler, pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)  # store.fill draws the one progress bar
    return pipe.to(device)


def pipeline_error_text(err: Exception) -> str:
    return " ".join(str(err).split())[:200]


def make_scheduler(name: str, current):
    """A fresh scheduler of the chosen kind built from the model's own config (betas, timestep spacing)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    kinds = {"dpmpp": DPMSolverMultistepScheduler, "ddim": DDIMScheduler, "euler_a": EulerAncestralDiscreteScheduler}
    if name == "default":
        return current
    return kinds[name].from_config(current.config)


def default_size(pipe) -> tuple[int, int]:
    """The pipeline's native (H, W): latent sample size × VAE factor (512² for SD 1.5, 1024² for SDXL)."""
    side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    return side, side


def size_multiple(pipe) -> int:
    """Output sides must be multiples of this: VAE factor × the UNet's total downsampling."""
    return int(pipe.vae_scale_factor) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
