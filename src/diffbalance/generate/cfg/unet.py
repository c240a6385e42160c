"""The denoiser ε_θ(x_t, t, c): a diffusers UNet2DModel with a learned class embedding of `num_classes + 1`
entries — the last entry is the null class ∅ that label dropout trains for ε(x_t) (Ho & Salimans 2022).
`null_class(unet)` is the only place that index is computed.

Image sizes that are not a multiple of 2^(levels−1) (e.g. Fashion-MNIST's 28×28 with the 4-level paper UNet)
are reflect-padded to the next multiple (28 → 32), diffused and denoised at that size, and centre-cropped
back after sampling (`pad_images` / `crop_images`); sizes that divide (28 with the 3-level tiny UNet) are untouched.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

# named sizes; "paper" is the DDPM CIFAR-10 UNet (Ho et al. 2020; google/ddpm-cifar10-32): 35.7M parameters
# (+ the class embedding), 128 base channels, multipliers (1, 2, 2, 2), 2 res blocks, attention at 16×16, dropout 0.1
UNET_SIZES = {
    # tiny: sized for the 2-core CPU demo (Fashion-MNIST in ~5 min); no attention (it cost ~15 % at 7×7 for no
    # visible gain), 16 base channels (2× the training img/s of 32 base channels on the CPU)
    "tiny": dict(block_out_channels=(16, 32, 64), layers_per_block=1, attention_levels=(), norm_num_groups=8, dropout=0.0),
    "small": dict(block_out_channels=(64, 128, 128, 128), layers_per_block=1, attention_levels=(1,), norm_num_groups=32, dropout=0.0),
    "paper": dict(block_out_channels=(128, 256, 256, 256), layers_per_block=2, attention_levels=(1,), norm_num_groups=32, dropout=0.1),
}


BASE_SIDE = 32  # the side the named sizes are made for: their deepest level works at 32 / 2^(levels − 1)


def levels_for(channels: tuple[int, ...], side: int) -> tuple[int, ...]:
    """A named size's channels per level, deepened for a larger input: one more level (the last channel count
    repeated) for each doubling of `side` past BASE_SIDE, so the deepest level sees as few positions as at 32 px
    (a 64×64 latent: one more level, 128: two). At 32 px and below the size is kept as it is."""
    extra = max(0, math.ceil(math.log2(side / BASE_SIDE))) if side > BASE_SIDE else 0
    return tuple(channels) + (channels[-1],) * extra


def padded_size(size: int, levels: int) -> int:
    """Smallest multiple of 2^(levels−1) that holds `size` (the UNet halves the resolution levels−1 times)."""
    step = 2 ** (levels - 1)
    return int(math.ceil(size / step) * step)


def build_unet(
    model_size: str,
    num_classes: int,
    channels: int,
    image_size: tuple[int, int],
    block_out_channels: tuple[int, ...] = (),
    layers_per_block: int = 0,
    dropout: float = -1.0,
) -> UNet2DModel:
    spec = dict(UNET_SIZES[model_size])
    spec["block_out_channels"] = levels_for(spec["block_out_channels"], max(image_size))  # depth by resolution
    if block_out_channels:
        spec["block_out_channels"] = tuple(block_out_channels)
        spec["attention_levels"] = tuple(lv for lv in spec["attention_levels"] if lv < len(block_out_channels))
        spec["norm_num_groups"] = min(spec["norm_num_groups"], math.gcd(*block_out_channels))
    if layers_per_block:
        spec["layers_per_block"] = layers_per_block
    if dropout >= 0:
        spec["dropout"] = dropout
    levels = len(spec["block_out_channels"])
    down = tuple("AttnDownBlock2D" if lv in spec["attention_levels"] else "DownBlock2D" for lv in range(levels))
    up = tuple("AttnUpBlock2D" if lv in spec["attention_levels"] else "UpBlock2D" for lv in reversed(range(levels)))
    sample_size = [padded_size(s, levels) for s in image_size]
    return UNet2DModel(
        sample_size=sample_size if sample_size[0] != sample_size[1] else sample_size[0],
        in_channels=channels,
        out_channels=channels,
        block_out_channels=spec["block_out_channels"],
        layers_per_block=spec["layers_per_block"],
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=spec["norm_num_groups"],
        dropout=spec["dropout"],
        attention_head_dim=None,  # one head per attention layer, as in DDPM
        num_class_embeds=num_classes + 1,  # + the null class ∅ (the last index)
    )


def null_class(unet: UNet2DModel) -> int:
    """Index of the null class ∅: the last class embedding."""
    return int(unet.config.num_class_embeds) - 1


def unet_sample_size(unet: UNet2DModel) -> tuple[int, int]:
    s = unet.config.sample_size
    return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 {0..255} → float [-1, 1] (what the model is trained and sampled in)."""
    return images.float() / 127.5 - 1


def pad_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Reflect-pad (B, C, h, w) to `size`, centred; a no-op when the sizes match."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    mode = "reflect" if dh < x.shape[-2] and dw < x.shape[-1] else "replicate"
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode=mode)


def crop_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop (B, C, H, W) back to `size` (the inverse of `pad_images`)."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]
