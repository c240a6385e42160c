"""The base of every generative rebalancer (cfg, ldm, ldm-img2img): a learned model fills the classes, with
oversampling as its zero point (`synthetic_share`), and the guided-sampling checks they share.

It lives here, above `rebalance`, because it speaks of guidance (generate.guidance); the runner sees only the
`Rebalancer` interface of rebalance.base.
"""

from __future__ import annotations

import dataclasses
from abc import ABC
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch

from diffbalance.generate.guidance import GUIDANCE_EXPECTED, ho_weight
from diffbalance.infra.configs import require
from diffbalance.infra.seeding import derive_seed, generator
from diffbalance.rebalance.base import Rebalancer
from diffbalance.rebalance.sources import copies


@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class GenerativeRebalancer(Rebalancer, ABC):
    """A rebalancer that synthesises images with a learned model, with oversampling as its zero point.

    `synthetic_share` r: per image, a draw u ~ U[0, 1) from the image's own seed (derive_seed(seed, "share")) decides
    whether it is generated (u < r) or an exact copy of a real image of its class, picked as `oversample` picks it
    (rebalance.sources). So image i of class c is the same whatever the class's total (the sweep's prefix proxy
    holds), r = 0 is byte-identical to `oversample` and r = 1 to the method alone (the 2026 finding that synthetic
    data did not beat duplicated real images, with its best share at 0.25, makes the share a knob to choose)."""

    generative: ClassVar[bool] = True
    synthetic_share: float = 1.0  # share of the fill images that are generated; the rest are copies of real images

    def validate(self) -> None:
        super().validate()
        require(0 <= self.synthetic_share <= 1, "synthetic_share", self.synthetic_share,
                "in [0, 1] (0: all copies, as oversample; 1: all generated)")

    def validate_guided_sampling(self, steps_example: str) -> None:
        """The checks every guided diffusion method (cfg, ldm: fields `num_inference_steps`, `guidance_w`,
        `guidance_convention`) shares, written once: at least one step, and w ≥ 0 in Ho's convention (paper eq. 8)."""
        require(self.num_inference_steps >= 1, "num_inference_steps", self.num_inference_steps,
                f"≥ 1, e.g. {steps_example}")
        require(ho_weight(self.guidance_w, self.guidance_convention) >= 0, "guidance_w", self.guidance_w,
                GUIDANCE_EXPECTED)

    def make_images(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        if self.synthetic_share >= 1:
            return self.generate(class_index, seeds)
        made = [is_generated(s, self.synthetic_share) for s in seeds]
        parts = {True: self._pairs(class_index, [s for s, m in zip(seeds, made) if m], self.generate),
                 False: self._pairs(class_index, [s for s, m in zip(seeds, made) if not m], self._copies)}
        pairs = [next(parts[m]) for m in made]  # back in seed order
        return (torch.stack([image for image, _ in pairs]),
                [{**record, "synthetic": m} for (_, record), m in zip(pairs, made)])

    def _copies(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        return copies(self.train_.images, self.train_.labels, class_index, seeds)

    @staticmethod
    def _pairs(class_index: int, seeds: list[int], make) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        """(image, record) of each seed, made in one call (none for no seeds)."""
        images, records = make(class_index, seeds) if seeds else ((), ())
        return iter(zip(images, records))


def is_generated(seed: int, share: float) -> bool:
    """Whether the fill image of `seed` is generated (not a copy) at synthetic share `share`: u(seed) < share."""
    return share >= 1 or float(torch.rand((), generator=generator(derive_seed(seed, "share")))) < share
