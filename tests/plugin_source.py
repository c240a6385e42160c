"""A data source from outside the package, and all that adding one takes: this file with one `@register_source`,
imported before the lookup (here by tests/test_registries.py; a built-in source is one module in diffbalance/data/,
found on the first lookup)."""

import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.data.registry import register_source
from diffbalance.infra.errors import DiffbalanceError


@register_source("toy", help="three classes of seeded random images made in memory (tests; reads no files)")
def load_toy(config) -> tuple[ImageSet, ImageSet]:
    """6 train and 2 test images per class, image_size × image_size (8 when unset) with `channels` channels, the same
    every call."""
    if config.root is not None:
        raise DiffbalanceError(f"dataset 'toy' reads no files, got root {config.root}", "leave root out")
    sets = []
    for split, per_class, seed in (("train", 6, 0), ("test", 2, 1)):
        labels = torch.arange(3).repeat_interleave(per_class)
        side = config.image_size or 8
        shape = (len(labels), config.channels, side, side)
        images = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        sets.append(ImageSet(images, labels, ("red", "green", "blue"), f"toy:{split}", {"dataset": "toy"}))
    return sets[0], sets[1]
