"""Image sets named by a string: an image folder, or a registered data source's split, optionally cut by a profile.
What every command that takes a training set reads (`rebalance`, `adapt`), and what `diffbalance fid` compares.

    FOLDER                              an image folder <class>/<images> (resized to image_size when given)
    NAME:SPLIT[:PROFILE=N]              a registered data source (data.sources.available_sources()), SPLIT train or
                                        test, e.g. cifar10:train, cifar10:train:linear=500
    NAME:ROOT[:SPLIT][:PROFILE=N]       a source located by its root (hf): any split of the dataset (default train),
                                        e.g. hf:./my_dataset, hf:user/name:validation
PROFILE: linear=n_min, exponential=ratio, step=ratio.
"""

from __future__ import annotations

import math

from pathlib import Path

from diffbalance.data.image_folder import load_image_folder
from diffbalance.data.imageset import ImageSet
from diffbalance.data.sources import DataConfig, available_sources, load_train_test, source
from diffbalance.imbalance.subset import ImbalanceConfig, apply_profile
from diffbalance.infra.errors import DiffbalanceError

SPLITS = ("train", "test")


def training_images(spec: str, image_size: int | None = None, channels: int | None = None,
                    on_corrupt: str = "skip", image_column: str | None = None,
                    label_column: str | None = None) -> ImageSet:
    """The images a spec names (module docstring); `image_size` (None: the images' own size), `channels` and
    `on_corrupt` apply to a folder and to a source that decodes files (hf); the columns to an hf dataset (None:
    found by their features)."""
    path = Path(spec).expanduser()
    columns = {k: v for k, v in (("image_column", image_column), ("label_column", label_column)) if v is not None}
    if path.is_dir():
        if columns:
            raise DiffbalanceError(f"{', '.join(columns)} name columns of a Hugging Face dataset; {spec} is a folder",
                                   "drop --image-column / --label-column, or pass hf:PATH")
        return load_image_folder(path, image_size=image_size, channels=channels, on_corrupt=on_corrupt)
    if ":" in spec and not path.exists():
        options = {k: v for k, v in (("image_size", image_size), ("channels", channels)) if v is not None}
        options.update(columns)
        return named_dataset(spec, on_corrupt=on_corrupt, **options)
    raise DiffbalanceError(f"{spec} is neither an image folder nor NAME:SPLIT",
                           "pass a folder with one subfolder per class, NAME:SPLIT with NAME one of "
                           f"{', '.join(available_sources())} (e.g. cifar10:train), or hf:PATH[:SPLIT]")


def parse_dataset_spec(spec: str) -> tuple[str, str, ImbalanceConfig | None]:
    """"NAME:SPLIT[:PROFILE=N]" → (name, split, the profile's ImbalanceConfig or None).

    linear=N keeps N images in the smallest class (linear alone: the automatic n_min); exponential=R and step=R
    set the ratio largest / smallest class (alone: 10)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[1] not in SPLITS:
        raise DiffbalanceError(f"cannot read dataset spec {spec!r}",
                               f"use NAME:{'|'.join(SPLITS)}[:PROFILE=N] with NAME one of "
                               f"{', '.join(available_sources())}, e.g. cifar10:train:linear=500")
    name, split, *profile = parts
    if not profile:
        return name, split, None
    kind, _, value = profile[0].partition("=")
    try:
        number = float(value) if value else None
    except ValueError:
        raise DiffbalanceError(f"profile value {value!r} in {spec!r} is not a number",
                               "write e.g. linear=500") from None
    if number is not None and not (math.isfinite(number) and number > 0):
        raise DiffbalanceError(f"profile value {value!r} in {spec!r} is not a positive finite number",
                               "write e.g. linear=500 (images of the smallest class) or exponential=100 (a ratio)")
    if kind == "linear":
        if number is not None and number != int(number):
            raise DiffbalanceError(f"linear={value} in {spec!r} is not a whole number of images",
                                   "write e.g. linear=500")
        return name, split, ImbalanceConfig(profile="linear", n_min=int(number) if number else None)
    return name, split, ImbalanceConfig(profile=kind, ratio=number or 10.0)


def named_dataset(spec: str, **options) -> ImageSet:
    """A split of a registered data source (found the usual way: env vars, ../shared, download), cut by the spec's
    profile; an unknown NAME is a one-line error listing the registered ones. A source located by its root (hf)
    is named NAME:ROOT[:SPLIT][:PROFILE=N], its SPLIT any split of the dataset (default train)."""
    name = spec.split(":", 1)[0]
    found = source(name)
    if found.get("root_in_spec", False):
        root, split, profile = parse_root_spec(spec)
        data = found["load_split"](DataConfig(name=name, root=root, **options), split)
    else:
        name, split, profile = parse_dataset_spec(spec)
        train, test = load_train_test(DataConfig(name=name))
        data = train if split == "train" else test
    return data if profile is None else apply_profile(data, profile)


def parse_root_spec(spec: str) -> tuple[str, str, ImbalanceConfig | None]:
    """"NAME:ROOT[:SPLIT][:PROFILE=N]" → (root, split, profile or None); SPLIT defaults to train."""
    _, root, *rest = spec.split(":")
    profile = [r for r in rest if "=" in r or r in ("linear", "exponential", "step")]
    split = [r for r in rest if r not in profile]
    if not root or len(split) > 1 or len(profile) > 1:
        raise DiffbalanceError(f"cannot read dataset spec {spec!r}",
                               "use NAME:ROOT[:SPLIT][:PROFILE=N], e.g. hf:./my_dataset:test or hf:user/name")
    cut = parse_dataset_spec(f"x:train:{profile[0]}")[2] if profile else None
    return root, split[0] if split else "train", cut
