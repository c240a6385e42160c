"""The single entry point for data: a `DataConfig` in, (train, test) ImageSets out.

Data sources are registered by name (`data.registry`); the built-in ones are found in this package on the first
lookup. A source registered anywhere else (a plugin module, a test) is found the same way once its module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffbalance.data.image_folder import OnCorrupt
from diffbalance.data.imageset import ImageSet
from diffbalance.data.registry import SOURCES, Loader
from diffbalance.infra.configs import Config, current_path
from diffbalance.infra.registry import Entry


def available_sources() -> list[str]:
    """The names of every registered data source, sorted."""
    return SOURCES.available()


def source(name: str, key: str = "") -> Entry[Loader]:
    """The data source `name` (its loader `.obj`, its `check`, `load_split`, `root_in_spec`); a one-line error
    listing the available ones (naming config key `key` if given)."""
    return SOURCES.entry(name, where=key if "." in key else "")


def describe_sources() -> str:
    """Every source with its one-line help, for command help texts: 'cifar10: …; fashion-mnist: …; folder: …'."""
    return SOURCES.describe()


@dataclass(frozen=True)
class DataConfig(Config):
    name: str = "fashion-mnist"  # a registered data source: cifar10, fashion-mnist, folder, … (available_sources())
    root: str | None = None  # where the data is: a folder (hf: a Hub id, save_to_disk folder or parquet files);
    # None = env var / default search / download
    test_root: str | None = None  # folder datasets: separate test folder (else a stratified split)
    image_size: int | None = None  # folder and hf datasets: None = each image's own size when all share one (else
    # the median shorter side, square, aspect kept, with a note); N = every image N × N (shorter side to N, centre)
    channels: Literal[1, 3] = 3  # folder and hf datasets: 3 = RGB, 1 = grayscale
    test_fraction: float = 0.2  # folder datasets without test_root, hf datasets without a test split
    split_seed: int = 0  # the seed of that stratified split
    on_corrupt: OnCorrupt = "skip"  # what an unreadable image does
    download: bool = True  # allow torchvision downloads when files are not found locally
    split: str = "train"  # hf: the split of the training images
    test_split: str | None = None  # hf: the split of the test images; None = "test" if there is one, else a split
    image_column: str | None = None  # hf: the Image column; None = the dataset's one Image feature
    label_column: str | None = None  # hf: the label column (ClassLabel, or integer / string values); None = the
    # dataset's one ClassLabel feature (or a column named label / labels)
    revision: str | None = None  # hf: the Hub revision (branch, tag or commit) of a Hub id
    image_roots: tuple[str, ...] = ()  # hf: further folders an image row given only by its path may point into
    # (besides the dataset's own folder and the Hugging Face caches); any other path is an unreadable row
    cache: bool = True  # keep decoded folders in the cache ($DIFFBALANCE_CACHE, default ~/.cache/diffbalance)

    def validate(self) -> None:
        found = source(self.name, current_path("name"))
        self.require(0 < self.test_fraction < 1, "test_fraction", "in (0, 1), e.g. 0.2")
        if found.get("check") is not None:
            found["check"](self)


def load_train_test(config: DataConfig) -> tuple[ImageSet, ImageSet]:
    """(train, test) ImageSets for `config`; each set's meta records the config it came from."""
    train, test = source(config.name).obj(config)
    for data in (train, test):
        data.meta["data_config"] = config.to_dict()
    return train, test
