"""The class-conditional LDM: the `cfg` UNet trained in the latent space of a pretrained VAE (Rombach et al. 2022),
for images larger than the pixel UNet is sized for.

    z = s · E(x).mean        x in [-1, 1] (N, 3, H, W), padded to a multiple of the VAE's factor f → z (N, c, H/f, W/f)
    x̂ = D(z / s)             back to pixels, cropped to the image's size; s = the VAE's scaling_factor

The encoder's mean (not a sample of its posterior) is each image's latent, so it is one tensor per image: computed
once when the generator is trained (OUT/latents.safetensors, reused on resume) and once per real-guided start.
Grey images go through the VAE as RGB (repeated) and come back as the mean of its three channels. The UNet is the
pixel one (generate.cfg.unet) with the latent's channels and size: the sizing by resolution is the VAE's factor —
a 256-px image is a 32×32 latent for SD's VAE (f = 8) — and is recorded in generator.json (`latent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from diffbalance.generate.cfg.unet import crop_images, pad_images, to_model_range
from diffbalance.generate.loading import load_pretrained
from diffbalance.infra.errors import DiffbalanceError

ENCODE_BATCH = 16  # images per VAE call (the latents do not depend on it: each image is encoded alone)


@dataclass(frozen=True, eq=False)
class LatentCodec:
    """A VAE on a device, eval mode, no gradients: images ↔ scaled latents."""

    vae: AutoencoderKL

    @classmethod
    def load(cls, source: str | Path, device: torch.device) -> LatentCodec:
        """The AutoencoderKL at `source` (a diffusers folder, a model's vae/ subfolder, or a Hub id); safetensors only."""
        path = Path(source)
        sub = {"subfolder": "vae"} if path.is_dir() and (path / "vae" / "config.json").is_file() else {}
        vae = load_pretrained(AutoencoderKL, source, "VAE", **sub)
        return cls(vae.to(device).eval().requires_grad_(False))

    @property
    def channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling(self) -> float:
        return float(self.vae.config.scaling_factor)

    def latent_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of an image's latent: its size padded to a multiple of the factor, divided by it."""
        return tuple(-(-s // self.factor) for s in image_size)  # ceil

    def describe(self, image_size: tuple[int, int], source: str) -> dict[str, Any]:
        """What generator.json records about the latent space."""
        return {"vae": source, "factor": self.factor, "latent_channels": self.channels,
                "latent_size": list(self.latent_size(image_size)), "scaling_factor": self.scaling}

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) → scaled latents (N, c, h, w), float32, on the VAE's device."""
        device = next(self.vae.parameters()).device
        out = []
        for start in range(0, len(images), ENCODE_BATCH):
            x = to_model_range(images[start:start + ENCODE_BATCH].to(device))  # [-1, 1]
            x = pad_images(x, tuple(self.factor * s for s in self.latent_size(tuple(x.shape[-2:]))))
            if x.shape[1] == 1 and self.vae.config.in_channels == 3:
                x = x.expand(-1, 3, -1, -1)
            out.append(self.vae.encode(x.float()).latent_dist.mean * self.scaling)  # (B, c, h, w)
        return torch.cat(out)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, image_size: tuple[int, int], channels: int) -> torch.Tensor:
        """Scaled latents (N, c, h, w) → uint8 images (N, channels, H, W) on the CPU, cropped to `image_size`."""
        x = self.vae.decode(latents.float() / self.scaling).sample  # (N, 3, h·f, w·f), about [-1, 1]
        x = crop_images(x, image_size)
        if channels == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def check_fits(codec: LatentCodec, unet_channels: int, folder: Path) -> None:
    """A generator's UNet works on the VAE's latents (its in-channels are the latent channels)."""
    if unet_channels != codec.channels:
        raise DiffbalanceError(f"the VAE of {folder} has {codec.channels} latent channels, its UNet takes "
                               f"{unet_channels}", "train the generator with this VAE (train.vae), or use the VAE "
                               "it was trained with")
