"""Explicit seeds only: every random choice takes a seed or a `torch.Generator`, never the global RNG."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple such as (base_seed, class_index, image_index).

    Image i of class c gets `derive_seed(seed, c, i)` whatever the batch it is generated in,
    so the same image comes out at any batch size and after a resume (EDM's per-image seeds).
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))
