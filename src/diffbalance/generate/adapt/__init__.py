"""Adapt a pretrained text-to-image model (Stable Diffusion 1.x/2.x) to the dataset's classes before it fills them.

The paper prompts Stable Diffusion with the bare class name, which fails when the name means nothing to the model
(defect codes, scan types). DA-Fusion (Trabucco et al. 2024) learns one textual-inversion token per class; LoRA
adapts the UNet's attention instead. Either is trained here on the imbalanced training set, every class at once:

    config.py             AdaptConfig: method, rank, steps, learning rate, resolution, seed, ...
    data.py               each class's word in its prompt; class-balanced, seeded batches
    lora.py               LoRA on the attention projections through peft (diffusers' format on disk)
    textual_inversion.py  one learned token per class (diffusers' learned_embeds.safetensors on disk)
    setup.py              load the pipeline and add the adapter (nothing written)
    train.py              adapt_pipeline(): the training loop, checkpoints, resume, the final files
    files.py              the adapter folder; apply_adapter() loads one into a pipeline with diffusers' loaders
    command.py            adapt_dataset(): what `diffbalance adapt` runs (checks → lock → command.json → train)

    from diffbalance.generate.adapt import AdaptConfig, adapt_pipeline
    folder = adapt_pipeline(imbalanced, "stable-diffusion-v1-5/stable-diffusion-v1-5",
                            AdaptConfig(method="textual-inversion", train_steps=1000), "adapters/ti", "cuda")
    build_rebalancer("ldm", {"adapter": str(folder), "prompt_template": "a photo of a {class}"})

diffusers and peft are imported on first use.
"""

from diffbalance.generate.adapt.config import AdaptConfig
from diffbalance.generate.adapt.files import apply_adapter, read_adapter
from diffbalance.generate.adapt.train import adapt_pipeline


__all__ = ["AdaptConfig", "adapt_pipeline", "apply_adapter", "read_adapter"]
