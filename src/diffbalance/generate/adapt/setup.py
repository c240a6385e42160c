"""A Stable Diffusion 1.x/2.x pipeline made ready to adapt: loaded in fp32 through the shared loader
(generate.loading: safetensors only, one-line errors for an unknown model or no network), frozen, the LoRA layers or
the new tokens added, the class prompts tokenised (and, when the text encoder does not train, encoded once).
Nothing is written here: a model that fails to load leaves the output folder untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.adapt.config import AdaptConfig
from diffbalance.generate.adapt.data import class_prompts, class_words
from diffbalance.generate.adapt.lora import add_lora
from diffbalance.generate.adapt.textual_inversion import add_tokens
from diffbalance.generate.loading import dtype_kwarg, load_pretrained, read_index
from diffbalance.generate.text2image.pipeline import WHAT, default_size, pipeline_class, size_multiple

PREDICTIONS = ("epsilon", "v_prediction")  # SD 1.x and 2.x-base: ε; SD 2.x at 768²: v


@dataclass(eq=False)
class Adaptation:
    """What the training loop and the writer need."""

    pipe: Any  # StableDiffusionPipeline, fp32, on the device, with the adapter added
    noise_scheduler: Any  # DDPMScheduler of the model's forward process (its saved scheduler config)
    trained: dict[str, torch.nn.Parameter]  # the only tensors the optimiser sees
    words: list[str]  # per class index: what replaces {class} in its prompt
    input_ids: torch.Tensor  # (K, L) the class prompts, tokenised (CPU)
    cond: torch.Tensor | None  # (K, L, D) their text-encoder states when the text encoder is frozen, else None
    size: tuple[int, int]  # training (H, W) in pixels


def check_model(model: str) -> dict[str, Any]:
    """The model's model_index.json, after checking it is reachable, holds safetensors weights and is an SD 1.x/2.x
    pipeline (one CLIP text encoder and a UNet; not SDXL, SD3, Flux). One-line errors; reads only the index."""
    index = read_index(pipeline_class("sd", "text2image"), model, WHAT)
    if "text_encoder_2" in index or "transformer" in index or "unet" not in index or "text_encoder" not in index:
        raise DiffbalanceError(f"{model} is a {index.get('_class_name', 'pipeline')}: adapt trains Stable "
                               "Diffusion 1.x/2.x pipelines (one CLIP text encoder and a UNet)",
                               "use e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")
    return index


def load_sd_pipeline(model: str, device: torch.device):
    """The model as a StableDiffusionPipeline in fp32 on `device`, its safety checker not loaded (never used)."""
    cls = pipeline_class("sd", "text2image")
    index = check_model(model)
    kwargs = {dtype_kwarg(): torch.float32}
    if index.get("safety_checker") not in (None, [None, None]):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = load_pretrained(cls, model, WHAT, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def training_size(pipe, config: AdaptConfig) -> tuple[int, int]:
    side, multiple = config.resolution_px or default_size(pipe)[0], size_multiple(pipe)
    if side % multiple:
        raise DiffbalanceError(f"resolution_px={side} is not a multiple of {multiple}, which this model needs",
                               f"use a multiple of {multiple}, or 0 for the model's own size")
    return side, side


def prepare_adaptation(train: ImageSet, model: str, config: AdaptConfig, device: torch.device) -> Adaptation:
    """Load `model` and add the adapter of `config` for the classes of `train` (see the module docstring)."""
    from diffusers import DDPMScheduler

    pipe = load_sd_pipeline(model, device)
    size = training_size(pipe, config)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if noise_scheduler.config.prediction_type not in PREDICTIONS:
        raise DiffbalanceError(f"{model} predicts {noise_scheduler.config.prediction_type}; adapt trains ε- or "
                               "v-prediction models", "use a Stable Diffusion 1.x/2.x model")
    words = class_words(train.class_names, config)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    if config.method == "lora":
        trained = add_lora(pipe, config)
    else:
        trained = add_tokens(pipe, words, train.class_names)
    text_trains = config.method == "textual-inversion" or config.train_text_encoder
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            _checkpoint_text_encoder(pipe.text_encoder)
    if config.method == "lora":  # train mode only where adapters are (SD has no dropout; LoRA's is 0)
        pipe.unet.train()
        if config.train_text_encoder:
            pipe.text_encoder.train()
    tok = pipe.tokenizer
    input_ids = tok(class_prompts(words, config.prompt_template), padding="max_length", truncation=True,
                    max_length=tok.model_max_length, return_tensors="pt").input_ids  # (K, L)
    cond = None
    if not text_trains:
        with torch.no_grad():
            cond = pipe.text_encoder(input_ids.to(device))[0]  # (K, L, D), fp32
    return Adaptation(pipe, noise_scheduler, trained, words, input_ids, cond, size)


def _checkpoint_text_encoder(encoder) -> None:
    """Activation checkpointing of the text encoder's layers, non-reentrant (its embeddings are frozen): transformers
    ≥ 5 calls it activation_checkpointing_enable, older ones gradient_checkpointing_enable."""
    kwargs = {"use_reentrant": False}
    if hasattr(encoder, "activation_checkpointing_enable"):
        encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
