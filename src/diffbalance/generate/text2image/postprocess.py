"""Between the pipeline's size (512² for SD 1.5) and the dataset's (32² for CIFAR-10), both ways.

Down: antialiased bicubic resize of the shorter side, centre crop, ITU-R 601 luma for 1-channel datasets,
then uint8. Up (img2img sources): the same resize without the crop's loss for same-aspect images.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F


def resize_cover(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize float (B, C, H, W) so it covers `size` (shorter side matched), then centre-crop to `size`."""
    h, w = size
    in_h, in_w = images.shape[-2:]
    scale = max(h / in_h, w / in_w)
    new = [max(h, round(in_h * scale)), max(w, round(in_w * scale))]
    if new != [in_h, in_w]:
        images = F.resize(images, new, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(images, [h, w]).clamp(0, 1)  # bicubic overshoots a little


def to_dataset_images(images: torch.Tensor, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Pipeline output, float (B, 3, H, W) in [0, 1] → uint8 (B, channels, h, w) on the CPU."""
    if not torch.isfinite(images).all():
        raise FloatingPointError("the diffusion pipeline returned NaN/inf images")
    x = resize_cover(images.detach().float().cpu(), size)  # (B, 3, h, w)
    if channels == 1:
        x = F.rgb_to_grayscale(x, num_output_channels=1)  # 0.299 R + 0.587 G + 0.114 B (ITU-R 601)
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def to_pipeline_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Dataset images, uint8 (B, 1 or 3, h, w) → float (B, 3, H, W) in [0, 1] at the pipeline's size."""
    x = images.float() / 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # gray → RGB with R = G = B
    return resize_cover(x, size)


def canvas_size(data_size: tuple[int, int], base: int, multiple: int) -> tuple[int, int]:
    """Pipeline (H, W) for data of `data_size`: shorter side `base`, same aspect, both multiples of `multiple`."""
    h, w = data_size
    scale = base / min(h, w)
    return tuple(max(multiple, round(s * scale / multiple) * multiple) for s in (h, w))
