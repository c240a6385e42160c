"""Explicit seeds only: every random choice takes a seed or a `torch.Generator`, never the global RNG."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple such as (base_seed, class_index, image_index).

    Image i of class c gets `derive_seed(seed, c, i)` whatever the batch it is generated in,
    so the same image comes out at any batch size and after a resume (EDM's per-image seeds).
    """
    return _seed_of(hashlib.sha256("/".join(str(p) for p in parts).encode()).digest())


def _seed_of(digest: bytes) -> int:
    """The 63-bit seed a sha256 digest stands for."""
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def derive_seeds(prefix: Sequence[int | str], indices: Sequence[int]) -> list[int]:
    """[derive_seed(*prefix, i) for i in indices], hashing the shared prefix once (a third of the time for the tens
    of thousands of seeds of a large fill)."""
    if not prefix:
        return [derive_seed(i) for i in indices]
    head = hashlib.sha256(("/".join(str(p) for p in prefix) + "/").encode())
    seeds = []
    for i in indices:
        h = head.copy()
        h.update(str(i).encode())
        seeds.append(_seed_of(h.digest()))
    return seeds


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image (diffusers' `generator=[...]` lists): image k depends on seeds[k] alone,
    and CPU generators give the same numbers whatever device the model runs on."""
    return [generator(s) for s in seeds]


@contextlib.contextmanager
def forked_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run code that draws from torch's *global* RNG (module initialisers, dropout, torchvision's MixUp) with
    that RNG forked and seeded with `seed`; the caller's RNG state is restored afterwards. On a CUDA `device`
    its generator is forked and seeded too (dropout on the GPU draws from it)."""
    cuda = device is not None and device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(int(seed))
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(int(seed))
        yield
