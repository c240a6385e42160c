"""LoRA (Hu et al. 2022) through peft as diffusers integrates it: every attention projection W of the UNet (and,
optionally, of the text encoder) becomes W + (alpha / r)·B·A with A (r × in) Gaussian and B (out × r) zero at
the start, so the adapted pipeline begins exactly as the base one. Only A and B train.

Saved with `StableDiffusionPipeline.save_lora_weights` (diffusers' key names, the LoraConfig in the safetensors
metadata so alpha ≠ r loads right): `pipe.load_lora_weights(folder)` reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffbalance.infra.atomic import atomic_path
from diffbalance.generate.adapt.config import AdaptConfig
from diffbalance.infra.seeding import derive_seed, forked_rng

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default weight name: load_lora_weights(folder) finds it
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # self- and cross-attention projections of the UNet
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # CLIP text encoder's attention projections


def add_lora(pipe, config: AdaptConfig) -> dict[str, torch.nn.Parameter]:
    """Add the adapters (initial A drawn from a forked RNG seeded from config.seed); returns the trained tensors.
    The UNet through diffusers' `add_adapter`; the text encoder through peft's `inject_adapter_in_model` (what
    transformers' `add_adapter` wraps, which demands a newer peft than diffusers needs to load the result)."""
    from peft import LoraConfig, inject_adapter_in_model

    parts = {"unet": (pipe.unet, UNET_TARGETS)}
    if config.train_text_encoder:
        parts["text_encoder"] = (pipe.text_encoder, TEXT_TARGETS)
    trained = {}
    for name, (module, targets) in parts.items():
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian", target_modules=targets)
        with forked_rng(derive_seed(config.seed, "lora-init", name)):  # peft initialises A from the global RNG
            if name == "unet":
                module.add_adapter(lora)
            else:
                inject_adapter_in_model(lora, module, adapter_name="default")
        trained.update({f"{name}.{k}": p for k, p in module.named_parameters() if p.requires_grad})
    return trained


def save_lora(pipe, folder: Path, config: AdaptConfig) -> Path:
    """Write LORA_FILE into `folder` atomically (a temporary name renamed into place); returns its path."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers, metadata = {}, {}
    for name in ("unet", "text_encoder") if config.train_text_encoder else ("unet",):
        module = getattr(pipe, name)
        layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
        metadata[f"{name}_lora_adapter_metadata"] = ordered(module.peft_config["default"].to_dict())
    final = Path(folder) / LORA_FILE
    with atomic_path(final) as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp.parent, weight_name=tmp.name, safe_serialization=True,
                                                  **layers, **metadata)
    return final


def ordered(value):
    """`value` with every set a sorted list (nested too): peft keeps target_modules as a set, which diffusers writes
    as a list in the set's iteration order — a different file per process (string hashing) for the same weights."""
    if isinstance(value, (set, frozenset)):
        return sorted(ordered(v) for v in value)
    if isinstance(value, dict):
        return {k: ordered(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(ordered(v) for v in value)
    return value
