"""Which real training image an image seed picks: the one rule shared by oversampling, the copies of a generative
method's `synthetic_share`, and the real-guided starts of `cfg` (`init: real` / `translate`).

    pick(pool, seed) = pool[randint(len(pool))]   drawn from generator(seed): the first draw of the image's seed

Because the rule and the seed are the same, image i of class c of an `oversample` fill, the copy a generative method
makes for that image (share < 1) and the source a real-guided `cfg` image starts from are the same real image, so
`strength: 0` and `synthetic_share: 0` are byte-identical to oversampling with the same fill seed.

Pools (indices into the training set the rebalancer was fitted on — the imbalanced set, never validation images):
    own class      the images of class c                                         (oversample, init: real)
    donors         the images of every class with MORE training images than c; for a largest class, every other
                   class. A draw from the pooled images is a draw of a donor class in proportion to its count, then
                   of one of its images (M2m / DBG: head classes carry their diversity to the tail)  (init: translate)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.seeding import generator


def class_pool(labels: torch.Tensor, class_index: int) -> torch.Tensor:
    """(n_c,) indices of the images of class `class_index`, in training-set order."""
    return torch.nonzero(labels == int(class_index)).flatten()


def donor_pool(labels: torch.Tensor, class_index: int) -> torch.Tensor:
    """(m,) indices of the images of every class with more images than `class_index` (every other class when it is
    a largest one), in training-set order."""
    counts = torch.bincount(labels)
    others = [k for k in range(len(counts)) if k != int(class_index) and counts[k] > 0]
    if not others:
        raise DiffbalanceError(f"class {class_index} has no other class to translate from",
                               "use init: translate only on a dataset with at least 2 classes")
    larger = [k for k in others if counts[k] > counts[int(class_index)]]
    return torch.nonzero(torch.isin(labels, torch.tensor(larger or others))).flatten()


def pick(pool: torch.Tensor, seed: int) -> int:
    """The training-set index image seed `seed` picks from `pool`: uniform, the first draw of generator(seed)."""
    return int(pool[torch.randint(len(pool), (1,), generator=generator(seed))])


def picks(pool: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """(len(seeds),) int64: `pick(pool, s)` for every seed s. One generator is re-seeded per image instead of a new
    one made (manual_seed resets its whole state, so each draw is still the first of generator(s)): a third of the
    time, which matters at tens of thousands of copies."""
    g, n = torch.Generator(), len(pool)
    drawn = [int(torch.randint(n, (1,), generator=g.manual_seed(int(s)))) for s in seeds]
    return pool[drawn]


def copy_sources(labels: torch.Tensor, class_index: int, seeds: Sequence[int]) -> torch.Tensor:
    """(len(seeds),) int64 training-set indices of the real images of class `class_index` that the copies of
    `seeds` are (`picks` from the class's own pool)."""
    return picks(class_pool(labels, class_index), seeds)


def copies(images: torch.Tensor, labels: torch.Tensor, class_index: int,
           seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict]]:
    """Exact copies of real images of class `class_index`, image k picked by seeds[k]: uint8 (len(seeds), C, H, W)
    (a new tensor: indexing copies) and one record per copy (its source index)."""
    sources = copy_sources(labels, class_index, seeds)
    return images[sources], [{"source_indices": [p]} for p in sources.tolist()]
