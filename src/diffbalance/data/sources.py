"""The single entry point for data: a `DataConfig` in, (train, test) ImageSets out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from diffbalance.data.cache import cache_key, cached_sets
from diffbalance.data.cifar10 import load_cifar10
from diffbalance.data.fashion_mnist import load_fashion_mnist, resolve_fashion_mnist
from diffbalance.data.image_folder import load_image_folder, note_skipped, stratified_split
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.configs import Config
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import cache_dir

DATASETS = ("cifar10", "fashion-mnist", "folder")


@dataclass(frozen=True)
class DataConfig(Config):
    name: Literal["cifar10", "fashion-mnist", "folder"] = field(default="fashion-mnist", metadata={"what": "dataset"})
    root: str | None = None  # folder holding the files; None = env var / default search / download
    test_root: str | None = None  # folder datasets: separate test folder (else a stratified split)
    image_size: int = 32  # folder datasets: images are resized to image_size × image_size
    channels: Literal[1, 3] = 3  # folder datasets: 3 = RGB, 1 = grayscale
    test_fraction: float = 0.2  # folder datasets without test_root
    split_seed: int = 0  # folder datasets without test_root: seed of the stratified split
    on_corrupt: Literal["skip", "error"] = "skip"  # what an unreadable image does
    download: bool = True  # allow torchvision downloads when files are not found locally
    cache: bool = True  # keep decoded folders in the cache ($DIFFBALANCE_CACHE, default ~/.cache/diffbalance)

    def validate(self) -> None:
        if self.name == "folder" and self.root is None:
            raise DiffbalanceError("dataset 'folder' needs a root", "pass the folder holding <class>/<image> files")
        self.require(self.image_size >= 1, "image_size", "positive, e.g. 32 or 64")
        self.require(0 < self.test_fraction < 1, "test_fraction", "in (0, 1), e.g. 0.2")


def load_train_test(config: DataConfig) -> tuple[ImageSet, ImageSet]:
    """(train, test) ImageSets for `config`; each set's meta records the config it came from."""
    if config.name == "fashion-mnist":
        train, test = load_fashion_mnist(resolve_fashion_mnist(config.root, config.download, cache_dir()))
    elif config.name == "cifar10":
        train, test = load_cifar10(config.root, config.download, config.cache, cache_dir())
    else:
        train, test = load_folder_train_test(config)
    for data in (train, test):
        data.meta["data_config"] = config.to_dict()
    return train, test


def load_folder_train_test(config: DataConfig) -> tuple[ImageSet, ImageSet]:
    """A user image folder (plus optional test folder or a seeded stratified split), cached after the first decode."""
    root = Path(config.root)
    test_root = Path(config.test_root) if config.test_root else None
    options = {k: getattr(config, k) for k in ("image_size", "channels", "test_fraction", "split_seed", "on_corrupt")}
    if test_root is not None:
        options.pop("test_fraction"), options.pop("split_seed")  # they play no part with a test folder

    def build() -> tuple[ImageSet, ImageSet]:
        read = dict(image_size=config.image_size, channels=config.channels, on_corrupt=config.on_corrupt)
        if test_root is None:
            return stratified_split(load_image_folder(root, **read), config.test_fraction, config.split_seed)
        train = load_image_folder(root, **read)
        return train, load_image_folder(test_root, class_names=train.class_names, **read)

    if not root.is_dir():  # checked before hashing so the error names the folder
        raise DiffbalanceError(
            f"image folder {root} does not exist", "pass a folder laid out as <root>/<class>/<image>"
        )
    if test_root is not None and not test_root.is_dir():
        raise DiffbalanceError(
            f"test folder {test_root} does not exist", "pass an existing folder or leave test_root out"
        )
    key = cache_key("folder", [root, test_root], options)
    train, test = cached_sets(key, build, enabled=config.cache)
    if train.meta.get("cache", {}).get("hit"):
        _rewarn_unreadable(train, test)
    return train, test


def _rewarn_unreadable(*sets: ImageSet) -> None:
    """On a cache hit the decode did not run; repeat its one-line notice about skipped files (never a warning)."""
    reported = set()
    for data in sets:
        count, first = data.meta.get("unreadable_count", 0), ", ".join(data.meta.get("unreadable_first", []))
        report = data.meta.get("unreadable_report") or f"{count} unreadable image(s), first: {first}"  # older caches
        if count and report not in reported:  # a split shares its parent's report
            reported.add(report)
            note_skipped(f"{report} (cached decode)")
