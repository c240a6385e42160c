"""What the adaptation trains on: each class's word in the prompt, and the seeded training batches.

Words: what replaces {class} in a class's prompt, during training and later in `ldm`'s prompts.
    lora, identifier "name"        the cleaned class name ("pickup_truck" → "pickup truck")
    lora, identifier "rare-token"  "sks<k> <name>": DreamBooth's rare identifier + class noun (Ruiz et al. 2023)
    textual-inversion              the class's own new token "<pickup-truck>" (DA-Fusion, Trabucco et al. 2024)

Batches: with class-balanced sampling a class is drawn uniformly (among those with images), then one of its images
uniformly, so a class of 50 images gets as many steps as one of 5,000; otherwise images are drawn uniformly.
Every draw comes from the step's own generator (draws with replacement, no epoch state to restore on resume).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from diffbalance.data.store import pixel_chunks
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.adapt.config import AdaptConfig
from diffbalance.generate.text2image.postprocess import to_pipeline_images
from diffbalance.generate.text2image.prompts import clean_class_name

RARE_PREFIX = "sks"  # DreamBooth's identifier; class k gets "sks<k>"


def class_token(class_name: str) -> str:
    """The textual-inversion token of a class: "<" + lower-case name, words joined by "-" + ">"."""
    return "<" + "-".join(clean_class_name(class_name).lower().split()) + ">"


def class_words(class_names: Sequence[str], config: AdaptConfig) -> list[str]:
    """One word per class (see the module docstring); tokens must be distinct."""
    if config.method == "textual-inversion":
        tokens = [class_token(c) for c in class_names]
        twice = sorted({t for t in tokens if tokens.count(t) > 1})
        if twice:
            raise DiffbalanceError(f"class names {', '.join(c for c in class_names if class_token(c) in twice)} "
                                   f"give the same token {twice[0]}", "rename the classes so they differ by more "
                                   "than case, spaces or underscores")
        return tokens
    if config.identifier == "rare-token":
        return [f"{RARE_PREFIX}{k} {clean_class_name(c)}" for k, c in enumerate(class_names)]
    return [clean_class_name(c) for c in class_names]


def class_prompts(words: Sequence[str], template: str) -> list[str]:
    return [template.replace("{class}", w) for w in words]


def batch_indices(labels: torch.Tensor, batch_size: int, balanced: bool, gen: torch.Generator) -> torch.Tensor:
    """(batch_size,) int64 indices into the training set, drawn with `gen` (a CPU generator)."""
    if not balanced:
        return torch.randint(len(labels), (batch_size,), generator=gen)
    counts = torch.bincount(labels)
    present = torch.nonzero(counts).flatten()  # classes with at least one image
    order = torch.argsort(labels, stable=True)  # images grouped by class, each group in dataset order
    starts = torch.cumsum(counts, 0) - counts  # where each class's group begins in `order`
    cls = present[torch.randint(len(present), (batch_size,), generator=gen)]
    pos = (torch.rand(batch_size, generator=gen, dtype=torch.float64) * counts[cls]).long()  # uniform in the class
    return order[starts[cls] + pos]


def training_pixels(images: torch.Tensor, size: tuple[int, int], flip: bool, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B, 1|3, h, w) → float (B, 3, H, W) in [-1, 1] at the training size (upscaled as for img2img, on the
    images' device), half flipped left-right when `flip` (drawn from `gen`, a CPU generator)."""
    x = to_pipeline_images(images, size) * 2 - 1  # (B, 3, H, W)
    if flip:
        flipped = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
        x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
    return x


def fingerprint(train: ImageSet) -> str:
    """sha256 of the images and labels: an adapter is reused or resumed only on the very same data."""
    digest = hashlib.sha256()
    digest.update(str(tuple(train.images.shape)).encode())
    for rows in pixel_chunks(train.images):  # in memory or on disk (data.store): the same bytes
        digest.update(rows)
    digest.update(str(tuple(train.labels.shape)).encode())
    digest.update(train.labels.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()
