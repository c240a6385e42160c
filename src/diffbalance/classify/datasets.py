"""diffbalance's data in your own PyTorch training loop: a Dataset of real + fill images, and a class-balanced sampler.

    data = RebalancedDataset("lt/train", fills="fills/cfg", transform=v2.Compose([...]))
    loader = DataLoader(data, batch_size=128, sampler=class_balanced_sampler(data.labels, seed=0))
    for images, labels, is_synthetic in loader: ...

The real images and every fill are held in memory as one uint8 tensor (as everywhere in diffbalance); an item is
(image, label, is_synthetic), the image a `torchvision.tv_tensors.Image` (uint8, C×H×W) passed through `transform`,
so any torchvision v2 transform applies. A fill's classes are matched to the real set's by name, so a fill whose
classes are listed in another order lands on the right labels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision import tv_tensors

from diffbalance.data.image_folder import CLASSES_FILE, load_image_folder
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError, DiffbalanceTypeError, require_type
from diffbalance.rebalance.store import load_fill

__all__ = ["RebalancedDataset", "class_balanced_sampler"]

ImagesLike = Union[ImageSet, str, Path]  # an ImageSet, or a folder on disk


class RebalancedDataset(Dataset):
    """The real training images followed by the fill images, as (image, label, is_synthetic) items.

    real: an ImageSet, or an image folder `<root>/<class>/<image>` (read with `load_image_folder`, at `image_size`
        and `channels` when given). Its class names are the dataset's classes, in its order.
    fills: one fill or several: folders written by `diffbalance rebalance` or `rebalance.store.fill` (their
        classes.json names the classes), or ImageSets. Each fill class must be a class of `real`; images must have
        the real images' shape.
    transform: applied to each image (a `tv_tensors.Image`, uint8 C×H×W), e.g. a torchvision v2 Compose.

    `is_synthetic` is True for every fill image — generated, mixed, or (oversample) a copy of a real image — as the
    rest of diffbalance counts fill images, so `synthetic` says which images a fill added, not which are new pixels.

    Attributes: `labels` (N,) int64, `synthetic` (N,) bool, `class_names`, `images` (N, C, H, W) uint8.
    """

    def __init__(
        self,
        real: ImagesLike,
        fills: ImagesLike | Sequence[ImagesLike] = (),
        transform: Callable[[Any], Any] | None = None,
        *,
        image_size: int | None = None,
        channels: int | None = None,
    ):
        require_type(real, (ImageSet, str, os.PathLike), "real", "an ImageSet or an image folder path")
        if not isinstance(fills, (ImageSet, str, os.PathLike, list, tuple)):
            raise DiffbalanceTypeError(f"fills must be a fill (folder path or ImageSet) or a list of them, got "
                                       f"{type(fills).__name__}", "pass fills='fills/cfg' or fills=[...]")
        fill_list = [fills] if isinstance(fills, (ImageSet, str, os.PathLike)) else list(fills)
        for k, f in enumerate(fill_list):
            require_type(f, (ImageSet, str, os.PathLike), f"fills[{k}]", "a fill folder path or an ImageSet")
        if transform is not None and not callable(transform):
            raise DiffbalanceTypeError(f"transform must be callable, got {type(transform).__name__}",
                                       "pass a torchvision v2 transform (or any function of an image), or None")
        real_set = real if isinstance(real, ImageSet) else load_image_folder(Path(real), image_size, channels)
        fill_sets = [_read_fill(f) for f in fill_list]
        labels = [real_set.labels] + [_matched_labels(f, real_set) for f in fill_sets]
        self.class_names: tuple[str, ...] = real_set.class_names
        self.images = torch.cat([real_set.images, *(f.images for f in fill_sets)])  # (N, C, H, W) uint8
        self.labels = torch.cat(labels)  # (N,) int64
        self.synthetic = torch.cat([torch.zeros(len(real_set), dtype=torch.bool),
                                    *(torch.ones(len(f), dtype=torch.bool) for f in fill_sets)])  # (N,) bool
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int, bool]:
        image = tv_tensors.Image(self.images[index])  # (C, H, W) uint8
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index]), bool(self.synthetic[index])


def class_balanced_sampler(
    labels: torch.Tensor | Sequence[int], num_samples: int | None = None, seed: int = 0, replacement: bool = True
) -> WeightedRandomSampler:
    """A sampler that draws every class equally often in expectation: sample i weighs 1 / (images of its class).
    `num_samples` draws per epoch (default: len(labels)); its own generator, seeded with `seed`, so the same seed
    gives the same order (epoch after epoch) and the global RNG is never touched."""
    require_type(seed, int, "seed", "an int")
    require_type(replacement, bool, "replacement", "True or False")
    if num_samples is not None:
        require_type(num_samples, int, "num_samples", "an int or None")
    try:
        given = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise DiffbalanceTypeError(f"labels must be class indices, got {type(labels).__name__}",
                                   "pass dataset.labels") from None
    if given.numel() and (given.is_floating_point() or given.is_complex() or given.dtype == torch.bool):
        raise DiffbalanceTypeError(f"labels must be integer class indices, got {given.dtype}", "pass dataset.labels")
    labels = given.to(torch.long)
    if labels.ndim != 1 or len(labels) == 0 or int(labels.min()) < 0:
        raise DiffbalanceError(f"class_balanced_sampler needs a non-empty 1-D tensor of class indices ≥ 0, got shape "
                               f"{tuple(labels.shape)}", "pass dataset.labels")
    num_samples = len(labels) if num_samples is None else num_samples
    if num_samples < 1 or (not replacement and num_samples > len(labels)):
        raise DiffbalanceError(f"num_samples={num_samples} cannot be drawn from {len(labels)} labels"
                               + ("" if replacement else " without replacement"),
                               "pass a positive num_samples (at most len(labels) with replacement=False)")
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)  # no table up to max label
    weights = 1.0 / counts[inverse].double()  # (N,): every class sums to 1
    return WeightedRandomSampler(weights, num_samples, replacement=replacement,
                                 generator=torch.Generator().manual_seed(int(seed)))


def _read_fill(fill: ImagesLike) -> ImageSet:
    """A fill as an ImageSet in its own class order: given, or read from a finished fill folder."""
    if isinstance(fill, ImageSet):
        return fill
    folder = Path(fill)
    if not (folder / "fill.json").is_file():
        raise DiffbalanceError(f"{folder} is not a fill folder (no fill.json)",
                               "pass a folder written by `diffbalance rebalance`, or read other images with "
                               "load_image_folder and pass the ImageSet")
    if not (folder / "complete.json").is_file():
        raise DiffbalanceError(f"fill folder {folder} is not finished (no complete.json)",
                               "run the same `diffbalance rebalance` command again to finish it")
    listing = folder / CLASSES_FILE if (folder / CLASSES_FILE).is_file() else folder / "fill.json"
    try:
        names = json.loads(listing.read_text())["class_names"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DiffbalanceError(f"{listing} is damaged (no class_names)", "make the fill again") from None
    return load_fill(folder, names)


def _matched_labels(fill: ImageSet, real: ImageSet) -> torch.Tensor:
    """The fill's labels (M,) as indices of the real set's classes, matched by name; checks the image shape."""
    index = {name: k for k, name in enumerate(real.class_names)}
    unknown = [name for name in fill.class_names if name not in index]
    if unknown:
        raise DiffbalanceError(
            f"fill {fill.source or '(ImageSet)'} has class(es) {', '.join(map(repr, unknown))} that the real set "
            f"({', '.join(real.class_names)}) does not have",
            "pass the fill made from this real set, or a real set with those classes",
        )
    if len(fill) and fill.images.shape[1:] != real.images.shape[1:]:
        raise DiffbalanceError(
            f"fill {fill.source or '(ImageSet)'} has images of {tuple(fill.images.shape[1:])}, the real set "
            f"{tuple(real.images.shape[1:])}",
            "read the real folder at the fill's size and channels (image_size=, channels=)",
        )
    return torch.tensor([index[name] for name in fill.class_names], dtype=torch.long)[fill.labels]
