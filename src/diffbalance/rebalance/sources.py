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

import functools
from collections.abc import Sequence

import numpy as np
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
    """(len(seeds),) int64: `pick(pool, s)` for every seed s, for all seeds at once (`first_draws`): the same
    indices as one generator per image, a fraction of the time at tens of thousands of copies."""
    if len(pool) >= VECTOR_POOL_LIMIT or not _first_draws_match_torch():
        g = torch.Generator()  # one generator re-seeded per image: each draw is still the first of generator(s)
        return pool[[int(torch.randint(len(pool), (1,), generator=g.manual_seed(int(s)))) for s in seeds]]
    return pool[torch.from_numpy(first_draws(seeds) % len(pool))] if len(seeds) else pool[:0]


VECTOR_POOL_LIMIT = 2**24  # torch reduces the first 32-bit output modulo n below 2²⁸ (checked up to 2²⁶ in tests)


@functools.cache
def _first_draws_match_torch() -> bool:
    """Whether this torch's CPU generator is the MT19937 `first_draws` reproduces (checked once per process)."""
    seeds = [0, 1, 5489, 2**32 + 7, 2**63 - 1, 1457069304591136084]
    n = 1_000_003
    return [int(d) % n for d in first_draws(seeds)] == [
        int(torch.randint(n, (1,), generator=generator(s))) for s in seeds]


def first_draws(seeds: Sequence[int]) -> np.ndarray:
    """(len(seeds),) int64: the first 32-bit output of torch's CPU generator seeded with each seed — what
    `torch.randint(n, (1,), generator=generator(s))` reduces modulo n (n < 2³²). torch's CPU generator is an MT19937
    seeded with the seed's low 32 bits (at::mt19937's init_with_uint32); its first output is word 0 after the first
    twist, state[397] ^ twist(state[0], state[1]), tempered. Vectorised over the seeds (tests check it against
    torch)."""
    mask = np.uint64(0xFFFFFFFF)
    x = np.asarray([int(s) & 0xFFFFFFFF for s in seeds], dtype=np.uint64)
    s0 = x
    for j in range(1, 398):  # the initialisation recurrence, up to word 397
        x = (np.uint64(1812433253) * (x ^ (x >> np.uint64(30))) + np.uint64(j)) & mask
        if j == 1:
            s1 = x
    y = (s0 & np.uint64(0x80000000)) | (s1 & np.uint64(0x7FFFFFFF))
    y = x ^ (y >> np.uint64(1)) ^ np.where((s1 & np.uint64(1)) == 1, np.uint64(0x9908B0DF), np.uint64(0))
    y ^= y >> np.uint64(11)
    y ^= (y << np.uint64(7)) & np.uint64(0x9D2C5680)
    y ^= (y << np.uint64(15)) & np.uint64(0xEFC60000)
    y ^= y >> np.uint64(18)
    return (y & mask).astype(np.int64)


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
