"""`none` and random oversampling: the two non-generative reference points."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from diffbalance.rebalance.base import Rebalancer, register
from diffbalance.rebalance.sources import copies, copy_sources


@register
@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class NoRebalance(Rebalancer):
    """The identity sampler: adds nothing, whatever `sampling_strategy` says (`fit_resample` returns the input)."""

    name = "none"

    def images_to_add(self, counts: Sequence[int], class_names: Sequence[str]) -> list[int]:
        return [0] * len(counts)

    def generate(self, class_index: int, seeds: Sequence[int]):
        raise RuntimeError("the 'none' rebalancer generates no images")  # never called: it plans no image


@register
@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class RandomOversample(Rebalancer):
    """Fill a class with exact copies of its own images, each drawn uniformly with its own seed (rebalance.sources)."""

    name = "oversample"
    copies_only = True

    def generate(self, class_index: int, seeds: Sequence[int]):
        return copies(self.train_.images, self.train_.labels, class_index, seeds)

    def copy_sources(self, class_index: int, seeds: Sequence[int]):
        return copy_sources(self.train_.labels, class_index, seeds)
