"""The `folder` data source: a user's `<root>/<class>/<image>` folder, with a test folder or a seeded stratified
split, read by the one image reader (`data.image_folder`) and cached after the first decode."""

from __future__ import annotations

from pathlib import Path

from diffbalance.data.cache import cache_key, cached_sets
from diffbalance.data.folder_store import folder_bytes
from diffbalance.data.image_folder import (
    check_read_options,
    load_image_folder,
    note_skipped,
    stratified_split,
)
from diffbalance.data.imageset import ImageSet
from diffbalance.data.registry import register_source
from diffbalance.data.store import use_store
from diffbalance.infra.errors import DiffbalanceError


def check_folder_options(config) -> None:
    """The folder source's options (`config`: a DataConfig): a root, and what the image reader accepts."""
    if config.root is None:
        raise DiffbalanceError("dataset 'folder' needs a root", "pass the folder holding <class>/<image> files")
    check_read_options(config.image_size, config.channels, config.on_corrupt)


@register_source("folder", help="your <root>/<class>/<image> folder, at its images' own size or image_size "
                                "(needs a root)",
                 check=check_folder_options)
def load_folder_train_test(config) -> tuple[ImageSet, ImageSet]:
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
    if use_store(folder_bytes(root, config.image_size, config.channels)
                 + (folder_bytes(test_root, config.image_size, config.channels) if test_root else 0)):
        return _stored(config, root, test_root)
    train, test = cached_sets(key, build, enabled=config.cache)
    if train.meta.get("cache", {}).get("hit"):
        _rewarn_unreadable(train, test)
    return train, test


def _stored(config, root: Path, test_root: Path | None) -> tuple[ImageSet, ImageSet]:
    """The folder (and test folder) decoded into on-disk image stores in the cache, read by index (data.store,
    data.folder_store); a split is two index views of one store."""
    read = dict(image_size=config.image_size, channels=config.channels, on_corrupt=config.on_corrupt)
    whole = load_image_folder(root, store=True, **read)
    if test_root is None:
        return stratified_split(whole, config.test_fraction, config.split_seed)
    return whole, load_image_folder(test_root, class_names=whole.class_names, store=True, **read)


def _rewarn_unreadable(*sets: ImageSet) -> None:
    """On a cache hit the decode did not run; repeat its one-line notice about skipped files (never a warning)."""
    reported = set()
    for data in sets:
        count, first = data.meta.get("unreadable_count", 0), ", ".join(data.meta.get("unreadable_first", []))
        report = data.meta.get("unreadable_report") or f"{count} unreadable image(s), first: {first}"  # older caches
        if count and report not in reported:  # a split shares its parent's report
            reported.add(report)
            note_skipped(f"{report} (cached decode)")
