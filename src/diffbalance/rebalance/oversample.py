"""`none` and random oversampling: the two non-generative reference points."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from diffbalance.rebalance.base import Rebalancer, register
from diffbalance.seeding import generator


@register
@dataclasses.dataclass(kw_only=True)
class NoRebalance(Rebalancer):
    """Train on the imbalanced set as it is (adds nothing, whatever the target)."""

    name = "none"

    def generate(self, class_index: int, seeds: Sequence[int]):
        raise RuntimeError("the 'none' rebalancer generates no images")


@register
@dataclasses.dataclass(kw_only=True)
class RandomOversample(Rebalancer):
    """Fill a class with exact copies of its own images, each drawn uniformly with its own seed."""

    name = "oversample"

    def generate(self, class_index: int, seeds: Sequence[int]):
        pool = torch.nonzero(self.train_.labels == class_index).flatten()
        picks = [int(pool[torch.randint(len(pool), (1,), generator=generator(s))]) for s in seeds]
        return self.train_.images[picks].clone(), [{"source_indices": [p]} for p in picks]
