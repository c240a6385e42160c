"""The `hf` data source: a Hugging Face `datasets` dataset, decoded into the same cached ImageSets as an image folder.

`root` says where it is (the one option every source reads its location from):
    a local `save_to_disk` folder            datasets.load_from_disk
    parquet files (a file, a glob)            datasets.load_dataset("parquet", data_files=root)
    another local folder                      datasets.load_dataset(root): the packaged builders (parquet shards,
                                              train-*/test-* files, …)
    a Hub id ("user/name")                    datasets.load_dataset(root, revision=revision); offline, the HF cache
The training images are split `split` (default "train"); the test images split `test_split`, or "test" when the
dataset has one, or else a seeded stratified `test_fraction` of the training split (as for folders).

Images are read from the column `image_column` (an `Image` feature; unnamed, the dataset's one Image feature —
`img` in cifar10, `image` in most) as their encoded bytes and decoded by the one image reader (data.decode: the
same rules for modes, 16-bit, alpha, EXIF and unreadable files as an image folder), at their own size or
`image_size` (data.decode.one_size), with `channels`. Labels come from `label_column` (unnamed: the one `ClassLabel`
feature, or else a column named label / labels): the `ClassLabel` feature's names when it is one (in its order),
else the distinct values of the column, sorted (recorded in the sets' meta as `class_names_from: "sorted values"`). Decoded sets are cached under a key of the dataset's own fingerprints.
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path
from typing import Any

import torch

from diffbalance.data.cache import cache_key, cached_sets
from diffbalance.data.decode import decode_images, one_size
from diffbalance.data.folder_store import CHUNK, decode_into_store, header_size, note_stored
from diffbalance.data.store import use_store
from diffbalance.data.image_folder import check_read_options, note_skipped, stratified_split
from diffbalance.data.imageset import ImageSet
from diffbalance.data.registry import register_source
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import cache_dir
from diffbalance.infra.progress import note

INSTALL = "pip install 'diffbalance[hf]' (the Hugging Face datasets library)"
SHOWN_UNREADABLE = 3


def check_hf_options(config) -> None:
    """A root naming the dataset, and what the image reader accepts."""
    if not config.root:
        raise DiffbalanceError("dataset 'hf' needs a root",
                               "pass a Hub id (user/name), a save_to_disk folder or parquet files as root")
    check_read_options(config.image_size, config.channels, config.on_corrupt)


def load_hf_split(config, split: str) -> ImageSet:
    """One split of the dataset, whole (an image-set spec hf:ROOT:SPLIT), decoded and cached like `load_hf`."""
    data = _split(open_dataset(config.root, config.revision), split, config.root)
    config = with_columns(config, data, f"{config.root}:{split}")
    key = cache_key("hf-split", [], {**_options(config), "split": split, "fingerprint": _fingerprint(data)})

    def build(store: bool = False) -> tuple[ImageSet]:
        names, how = class_names(data, config.label_column)
        return (decode_split(data, config, names, f"{config.root}:{split}", how, key if store else None),)

    if use_store(estimated_bytes(data, config)):  # the store is the cache (data.store)
        return build(store=True)[0]
    return cached_sets(key, build, enabled=config.cache)[0]


@register_source("hf", help="a Hugging Face dataset: root = a Hub id, a save_to_disk folder or parquet files "
                            "(split, test_split, image_column, label_column, revision)", check=check_hf_options,
                 load_split=load_hf_split, root_in_spec=True)
def load_hf(config) -> tuple[ImageSet, ImageSet]:
    """(train, test) ImageSets of the dataset `config.root` names (module docstring)."""
    splits = open_dataset(config.root, config.revision)
    train_split = _split(splits, config.split, config.root)
    config = with_columns(config, train_split, f"{config.root}:{config.split}")
    test_name = config.test_split or ("test" if "test" in splits and config.split != "test" else None)
    test_split = _split(splits, test_name, config.root) if test_name else None
    key = cache_key("hf", [], {**_options(config), "test_split": test_name,
                               "fingerprints": [_fingerprint(s) for s in (train_split, test_split)]})

    def build(store: bool = False) -> tuple[ImageSet, ImageSet]:
        names, how = class_names(train_split, config.label_column)
        train = decode_split(train_split, config, names, f"{config.root}:{config.split}", how,
                             f"{key}-train" if store else None)
        if test_split is None:
            return stratified_split(train, config.test_fraction, config.split_seed)
        return train, decode_split(test_split, config, names, f"{config.root}:{test_name}", how,
                                   f"{key}-test" if store else None)

    if use_store(sum(estimated_bytes(s, config) for s in (train_split, test_split) if s is not None)):
        return build(store=True)  # on disk, read by index; the store is the cache (data.store)
    return cached_sets(key, build, enabled=config.cache)


def with_columns(config, split, source: str):
    """`config` with its image and label columns named: as given, or found by their features (module docstring);
    a dataset where that is ambiguous is a one-line error naming the candidates and the option to set."""
    import datasets

    features = split.features
    image, label = config.image_column, config.label_column
    if image is None:
        image = _one_column(source, features, [k for k, f in features.items() if isinstance(f, datasets.Image)],
                            "Image", "image_column (--image-column)")
    if label is None:
        labels = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if not labels:
            labels = [k for k in ("label", "labels") if k in features][:1]
        label = _one_column(source, features, labels, "ClassLabel", "label_column (--label-column)")
    return config if (image, label) == (config.image_column, config.label_column) else \
        config.replace(image_column=image, label_column=label)


def _one_column(source: str, features, found: list[str], kind: str, option: str) -> str:
    if len(found) == 1:
        return found[0]
    what = f"{len(found)} {kind} columns ({', '.join(found)})" if found else f"no {kind} column"
    raise DiffbalanceError(f"dataset {source} has {what}; its columns: {', '.join(features)}",
                           f"name the column with {option}")


def _options(config) -> dict[str, Any]:
    """What decides the decoded sets besides the data itself (the cache key's options)."""
    return {k: getattr(config, k) for k in ("root", "revision", "split", "image_column", "label_column", "image_size",
                                            "channels", "on_corrupt", "test_fraction", "split_seed")}


def _fingerprint(split) -> str | None:
    """The datasets library's own content fingerprint of a split (None for no split)."""
    return None if split is None else getattr(split, "_fingerprint", None)


def open_dataset(root: str, revision: str | None = None) -> dict[str, Any]:
    """{split name: datasets.Dataset} of the dataset `root` names; one-line errors for a missing package, an
    unreadable local dataset or an unreachable Hub id."""
    try:
        import datasets
    except ImportError:
        raise DiffbalanceError("the 'hf' data source needs the Hugging Face datasets library", INSTALL) from None
    datasets.disable_progress_bars()  # diffbalance's console speaks for the job
    datasets.logging.set_verbosity_error()  # its info/warning lines ("Using the latest cached version…", "Generating
    # split…") would reach the user as a second line beside diffbalance's one; its errors become one line below
    path = Path(root).expanduser()
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(path))
        elif str(root).endswith(".parquet"):
            if not glob.glob(str(path)):
                raise DiffbalanceError(f"no parquet files match {root}", "pass existing .parquet files (or a glob)")
            loaded = datasets.load_dataset("parquet", data_files=str(path))
        elif path.exists():
            loaded = datasets.load_dataset(str(path))
        elif path.is_absolute() or str(root).startswith((".", "~")):  # a local path (a Hub id is user/name)
            raise DiffbalanceError(f"no dataset at {root}", "pass an existing save_to_disk folder or parquet files, "
                                   "or a Hub id such as user/name")
        else:
            loaded = datasets.load_dataset(str(root), revision=revision)
    except DiffbalanceError:
        raise
    except Exception as err:  # noqa: BLE001 — the library raises many kinds (offline, not found, bad files)
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        where = "local dataset" if path.exists() else "Hugging Face Hub dataset"
        raise DiffbalanceError(f"cannot load the {where} {root!r} ({first})",
                               "check the id or path; offline, use a save_to_disk folder, parquet files or a "
                               "dataset already in the HF cache (HF_DATASETS_OFFLINE=1)") from None
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _split(splits: dict[str, Any], name: str, root: str):
    if name not in splits:
        raise DiffbalanceError(f"dataset {root!r} has no split {name!r}",
                               f"use split / test_split one of {', '.join(sorted(splits))}")
    return splits[name]


def class_names(split, label_column: str) -> tuple[tuple[str, ...], str]:
    """(class names, how they were found): the ClassLabel feature's names, or the sorted distinct values."""
    import datasets

    _column(split, label_column, "label_column")
    feature = split.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return tuple(feature.names), "ClassLabel"
    if not isinstance(feature, datasets.Value):  # an Image, a list (Sequence), a nested record: not one class each
        raise DiffbalanceError(f"label column {label_column!r} holds {type(feature).__name__} values, not class labels",
                               "point label_column at a ClassLabel, integer or string column")
    values = set(split[label_column])
    if not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in values) or \
            len({type(v) for v in values}) > 1:
        raise DiffbalanceError(f"label column {label_column!r} holds {sorted(map(repr, values))[:3]}…, not class "
                               "labels", "point label_column at a ClassLabel, integer or string column")
    return tuple(str(v) for v in sorted(values)), "sorted values"


def estimated_bytes(split, config) -> int:
    """Decoded bytes of a split: its rows × channels × the pixels of `image_size` or of the first image."""
    import datasets

    if len(split) == 0 or config.image_column not in split.features:
        return 0
    if config.image_size:
        h = w = config.image_size
    else:
        first = split.cast_column(config.image_column, datasets.Image(decode=False))[0][config.image_column]
        h, w = header_size(_bytes(first, allowed_image_roots(config))) or (1, 1)
    return len(split) * config.channels * h * w


def decode_split(split, config, names: tuple[str, ...], source: str, how: str, store_key: str | None = None
                 ) -> ImageSet:
    """Every row of `split` decoded into a uint8 ImageSet with labels in `names` order; with `store_key`, chunk by
    chunk into an on-disk image store in the cache (data.store), read by index."""
    import datasets

    _column(split, config.image_column, "image_column")
    if not isinstance(split.features[config.image_column], datasets.Image):
        raise DiffbalanceError(f"column {config.image_column!r} of {source} is not an image column "
                               f"({type(split.features[config.image_column]).__name__})",
                               "point image_column at the dataset's Image feature")
    raw = split.cast_column(config.image_column, datasets.Image(decode=False))
    roots = allowed_image_roots(config)
    labels = _label_indices(raw[config.label_column], names, split.features[config.label_column])
    labelled = [k for k, label in enumerate(labels) if label >= 0]
    if len(labelled) < len(labels):  # ClassLabel's -1: an unlabelled row, left out (said once)
        note(f"{len(labels) - len(labelled)} unlabelled row(s) (label -1) of {source} left out")
        raw, labels = raw.select(labelled), [labels[k] for k in labelled]
    if store_key is not None:
        return _decode_into_store(raw, labels, config, names, source, how, store_key, roots)
    blobs = [_bytes(item, roots) for item in raw[config.image_column]]
    row_names = [f"{source}[{k}]" for k in range(len(blobs))]
    images, bad = decode_images(blobs, config.image_size, config.channels, names=row_names)
    kept = [k for k, x in enumerate(images) if x is not None]
    meta = {"unreadable_count": len(bad), "unreadable_first": [str(b.path) for b in bad[:SHOWN_UNREADABLE]],
            "class_names_from": how}
    if bad:
        report = (f"{len(bad)} unreadable image(s) of {len(blobs)} in {source}, first: "
                  + ", ".join(f"{b.path} ({b.reason})" for b in bad[:SHOWN_UNREADABLE]))
        meta["unreadable_report"] = report
        if config.on_corrupt == "error" or not kept:
            raise DiffbalanceError(report if kept else f"no readable images: {report}",
                                   "repair or drop those rows, or skip them (on_corrupt 'skip')")
        note_skipped(report)
    xs = [images[k] for k in kept]
    if config.image_size is None:  # the images' own size when they share one (decode.one_size)
        xs = one_size(xs, source)
    return ImageSet(torch.stack(xs), torch.tensor([labels[k] for k in kept]), names, source, meta)


def _decode_into_store(raw, labels: list[int], config, names, source: str, how: str, key: str, roots) -> ImageSet:
    """decode_split's rows, a chunk at a time, into the store cache_dir("stores", key) (data.folder_store)."""
    column = config.image_column

    def blobs(start: int, stop: int) -> tuple[list[bytes], list[str]]:
        return ([_bytes(item, roots) for item in raw[start:stop][column]],
                [f"{source}[{k}]" for k in range(start, stop)])

    def sizes():
        for start in range(0, len(labels), CHUNK):
            yield from (header_size(b) for b in blobs(start, min(start + CHUNK, len(labels)))[0])

    def report(bad, total: int) -> str:
        return (f"{len(bad)} unreadable image(s) of {total} in {source}, first: "
                + ", ".join(f"{b.path} ({b.reason})" for b in bad[:SHOWN_UNREADABLE]))

    folder = cache_dir("stores", key)
    data = decode_into_store(folder, key, blobs, labels, names, source, config.image_size, config.channels,
                             config.on_corrupt, report, sizes=sizes, meta={"class_names_from": how})
    note_stored(source, data, folder)
    return data


def _column(split, name: str, option: str) -> None:
    if name not in split.column_names:
        raise DiffbalanceError(f"the dataset has no column {name!r}",
                               f"set {option} to one of {', '.join(split.column_names)}")


MAX_IMAGE_FILE_BYTES = 256 * 2**20  # a row's image file larger than this is unreadable (not read into memory)


def allowed_image_roots(config) -> list[Path]:
    """The folders an image row given only by its path may point into: the dataset's own folder (a local root; a
    parquet glob's folder), the Hugging Face caches, and `config.image_roots`."""
    import datasets

    roots = [Path(r).expanduser() for r in config.image_roots]
    local = Path(str(config.root)).expanduser()
    while any(c in local.name for c in "*?[") and local != local.parent:  # a parquet glob: the folder above it
        local = local.parent
    if local.exists():
        roots.append(local if local.is_dir() else local.parent)
    roots.append(Path(datasets.config.HF_DATASETS_CACHE))
    try:
        from huggingface_hub import constants
        roots.append(Path(constants.HF_HUB_CACHE))
    except ImportError:
        pass
    return [r.resolve() for r in roots]


def _bytes(item: dict, roots: list[Path]) -> bytes:
    """An encoded image of a `datasets.Image(decode=False)` column: its bytes, or the file it points to when that is
    a regular file inside one of `roots` and at most MAX_IMAGE_FILE_BYTES; anything else reads as an empty, so
    unreadable, row (a row naming /dev/zero or /etc/passwd is not opened)."""
    if item.get("bytes"):
        return item["bytes"]
    if not item.get("path"):
        return b""
    try:
        real = Path(item["path"]).expanduser().resolve(strict=True)
        if not any(real.is_relative_to(root) for root in roots):
            return b""
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the read
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_IMAGE_FILE_BYTES:
                return b""
            return f.read(MAX_IMAGE_FILE_BYTES + 1)
    except (OSError, RuntimeError):
        return b""  # decoded as unreadable: an empty file


def _label_indices(values: list, names: tuple[str, ...], feature) -> list[int]:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        out = [int(v) for v in values]
        bad = sorted({v for v in out if v < -1 or v >= len(names)})
        if bad:
            raise DiffbalanceError(f"labels {bad[:3]} are outside the ClassLabel's {len(names)} classes",
                                   "repair the label column (-1 marks an unlabelled row)")
        return out
    index = {name: k for k, name in enumerate(names)}
    missing = sorted({str(v) for v in values} - set(index))
    if missing:
        raise DiffbalanceError(f"labels {missing[:3]} are not classes of the training split ({', '.join(names)})",
                               "use splits with the same classes, or a ClassLabel column")
    return [index[str(v)] for v in values]
