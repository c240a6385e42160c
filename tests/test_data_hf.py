"""The `hf` data source on small local datasets built here (no network): save_to_disk and parquet, ClassLabel and
plain integer labels, odd images, bad columns, the image-set specs of the commands, and an unreachable Hub id."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

datasets = pytest.importorskip("datasets")

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.data.sources import DataConfig, load_train_test  # noqa: E402
from diffbalance.imbalance.specs import parse_root_spec, training_images  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def encoded(array: np.ndarray, mode: str | None = None) -> dict:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def rows(counts=(6, 3, 2), odd: bool = False) -> tuple[list[dict], list[int]]:
    """Class k's images are flat grey level 40 + 80·k (10×12 RGB); `odd` adds a 16-bit grey, an RGBA and a
    palette image to class 0 and one unreadable row."""
    images, labels = [], []
    for k, n in enumerate(counts):
        images += [encoded(np.full((10, 12, 3), 40 + 80 * k, np.uint8)) for _ in range(n)]
        labels += [k] * n
    if odd:
        images += [encoded(np.full((10, 12), 40 * 257, np.uint16)),
                   encoded(np.dstack([np.full((10, 12, 3), 40, np.uint8), np.zeros((10, 12), np.uint8)]), "RGBA"),
                   encoded(np.full((10, 12), 40, np.uint8), "L"), {"bytes": b"not an image", "path": None}]
        labels += [0, 0, 0, 0]
    return images, labels


def dataset(counts=(6, 3, 2), odd=False, class_label=True):
    images, labels = rows(counts, odd)
    label = datasets.ClassLabel(names=["a", "b", "c"]) if class_label else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


@pytest.fixture
def on_disk(tmp_path) -> Path:
    folder = tmp_path / "disk"
    datasets.DatasetDict({"train": dataset(odd=True), "test": dataset((2, 2, 2))}).save_to_disk(str(folder))
    return folder


def config(root, **kw) -> DataConfig:
    return DataConfig(name="hf", root=str(root), image_size=8, cache=False, **kw)


def test_save_to_disk_with_class_labels_and_odd_images(on_disk):
    train, test = load_train_test(config(on_disk))
    assert train.class_names == ("a", "b", "c") and train.meta["class_names_from"] == "ClassLabel"
    assert train.counts() == [9, 3, 2] and test.counts() == [2, 2, 2]  # the unreadable row is skipped
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (3, 8, 8)
    assert train.meta["unreadable_count"] == 1 and train.meta["unreadable_first"] == [f"{on_disk}:train[14]"]
    report = train.meta["unreadable_report"]  # names the count, the split and the row, with the decoder's reason
    assert report.startswith("1 unreadable image(s) of 15 in ") and report.endswith(":train[14] (not an image)")
    # 16-bit grey scaled to 8 bit, alpha dropped, grey repeated to RGB: every class-0 image is level 40
    assert torch.all(train.images[train.labels == 0] == 40)
    with pytest.raises(DiffbalanceError, match="unreadable image"):
        load_train_test(config(on_disk, on_corrupt="error"))


def test_parquet_files_and_plain_integer_labels(tmp_path):
    path = tmp_path / "x.parquet"
    dataset(class_label=False).to_parquet(str(path))
    train, test = load_train_test(config(path))
    assert train.class_names == ("0", "1", "2") and train.meta["class_names_from"] == "sorted values"
    assert sum(train.counts()) + sum(test.counts()) == 11  # no test split: a stratified 80/20 split
    again, _ = load_train_test(config(path))
    assert torch.equal(train.images, again.images)


def test_cached_decode_is_reused(on_disk, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "cache"))
    first, _ = load_train_test(DataConfig(name="hf", root=str(on_disk), image_size=8))
    second, _ = load_train_test(DataConfig(name="hf", root=str(on_disk), image_size=8))
    assert second.meta["cache"]["hit"] and torch.equal(first.images, second.images)


@pytest.mark.parametrize("options, match", [({"image_column": "img"}, "no column 'img'"),
                                            ({"label_column": "y"}, "no column 'y'"),
                                            ({"split": "validation"}, "no split 'validation'"),
                                            ({"image_column": "label"}, "not an image column")])
def test_bad_columns_and_splits_are_one_line_errors(on_disk, options, match):
    with pytest.raises(DiffbalanceError, match=match) as err:
        load_train_test(config(on_disk, **options))
    assert "\n" not in str(err.value)


def test_columns_are_found_by_their_features_when_unnamed(tmp_path, capsys):
    """cifar10 on the Hub names its columns img / label, cifar100 img / fine_label + coarse_label: the one Image
    feature and the one ClassLabel feature are found; two of a kind must be named."""
    images, labels = rows()
    names = datasets.ClassLabel(names=["a", "b", "c"])
    cifar_like = datasets.Dataset.from_dict(
        {"img": images, "fine_label": labels, "note": ["x"] * len(labels)},
        features=datasets.Features({"img": datasets.Image(), "fine_label": names, "note": datasets.Value("string")}))
    cifar_like.save_to_disk(str(tmp_path / "one"))
    train, test = load_train_test(config(tmp_path / "one"))
    assert train.class_names == ("a", "b", "c") and sum(train.counts()) + sum(test.counts()) == 11

    two = cifar_like.add_column("coarse_label", labels).cast_column("coarse_label", names)
    two.save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DiffbalanceError) as err:
        load_train_test(config(tmp_path / "two"))
    assert "2 ClassLabel columns (fine_label, coarse_label)" in str(err.value) and "--label-column" in str(err.value)
    train, _ = load_train_test(config(tmp_path / "two", label_column="coarse_label"))
    assert train.class_names == ("a", "b", "c")
    spec = f"hf:{tmp_path / 'two'}:train"  # every command that reads hf: specs takes the column options
    main(["fid", spec, spec, "--features", "random", "--label-column", "coarse_label"])
    main(["rebalance", spec, "--method", "oversample", "--label-column", "fine_label", "--out", str(tmp_path / "f")])
    with pytest.raises(SystemExit) as exit_code:
        main(["fid", str(tmp_path / "f"), spec, "--features", "random", "--label-column", "fine_label"])
    assert exit_code.value.code == 2 and "name columns of a Hugging Face dataset" in capsys.readouterr().err

    path = tmp_path / "plain.parquet"  # no ClassLabel feature: a column named label
    dataset(class_label=False).to_parquet(str(path))
    assert load_train_test(config(path))[0].meta["class_names_from"] == "sorted values"

    no_image = datasets.Dataset.from_dict({"label": labels}, features=datasets.Features({"label": names}))
    no_image.save_to_disk(str(tmp_path / "none"))
    with pytest.raises(DiffbalanceError, match="has no Image column; its columns: label — fix: name the column "
                                               r"with image_column \(--image-column\)"):
        load_train_test(config(tmp_path / "none"))


def test_missing_root_and_missing_parquet_files(tmp_path):
    with pytest.raises(DiffbalanceError, match="needs a root"):
        DataConfig(name="hf")
    with pytest.raises(DiffbalanceError, match="no parquet files match"):
        load_train_test(config(tmp_path / "none-*.parquet"))


def test_specs_name_any_split(on_disk):
    assert training_images(f"hf:{on_disk}", image_size=8).counts() == [9, 3, 2]
    assert training_images(f"hf:{on_disk}:test", image_size=8).counts() == [2, 2, 2]
    root, split, profile = parse_root_spec("hf:user/name:validation:exponential=5")
    assert (root, split, profile.profile, profile.ratio) == ("user/name", "validation", "exponential", 5.0)
    with pytest.raises(DiffbalanceError, match="cannot read dataset spec"):
        parse_root_spec("hf::a:b")


def test_rebalance_and_fid_commands_read_it(on_disk, tmp_path, capsys):
    main(["rebalance", f"hf:{on_disk}", "--method", "cutmix", "--image-size", "8", "--out", str(tmp_path / "fills")])
    complete = json.loads((tmp_path / "fills" / "complete.json").read_text())
    assert complete["present_per_class"] == [0, 6, 7]
    main(["fid", f"hf:{on_disk}:train", f"hf:{on_disk}:test", "--features", "random"])
    assert "FID (random features)" in capsys.readouterr().out


def test_an_unreachable_hub_id_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "diffbalance", "rebalance", "hf:no-such-user/no-such-dataset",
                           "--method", "oversample", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "cannot load the Hugging Face Hub dataset 'no-such-user/no-such-dataset'" in lines[0]
    assert "HF_DATASETS_OFFLINE" in lines[0] and not (tmp_path / "out").exists()


def test_path_only_rows_read_only_regular_files_inside_the_dataset(tmp_path):
    """A row given by its path alone names a file to read: only regular files inside the dataset's own folder (or
    the HF caches, or `image_roots`), at most MAX_IMAGE_FILE_BYTES; /dev/zero, /etc/passwd and a FIFO are
    unreadable rows, never opened into memory."""
    folder = tmp_path / "ds"
    folder.mkdir()
    good = folder / "good.png"
    Image.fromarray(np.full((10, 12, 3), 200, np.uint8)).save(good)
    outside = tmp_path / "outside.png"
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(outside)
    fifo = folder / "fifo.png"
    os.mkfifo(fifo)
    images, labels = rows((4, 3, 2))
    paths = [str(good), "/dev/zero", "/etc/passwd", str(outside), str(fifo)]
    images += [{"bytes": None, "path": p} for p in paths]
    labels += [1] * len(paths)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
        str(folder / "train.parquet"))
    train, _ = load_train_test(config(folder / "train.parquet", test_fraction=0.3))
    full = train.meta["unreadable_count"]
    assert full == 4  # /dev/zero, /etc/passwd, the file outside, the FIFO: good.png alone is read
    allowed, _ = load_train_test(config(folder / "train.parquet", test_fraction=0.3, image_roots=(str(tmp_path),)))
    assert allowed.meta["unreadable_count"] == 3  # the user allowed the folder outside: it is read too


def test_labels_that_are_not_one_class_each_are_one_line(tmp_path):
    images, labels = rows((3, 3, 2))
    for name, column, feature in [("lists", [[v] for v in labels], datasets.Sequence(datasets.Value("int64"))),
                                  ("images", images, datasets.Image())]:
        features = datasets.Features({"image": datasets.Image(), "label": feature})
        folder = tmp_path / name
        datasets.Dataset.from_dict({"image": images, "label": column}, features=features).save_to_disk(str(folder))
        with pytest.raises(DiffbalanceError, match="not class labels") as err:
            load_train_test(config(folder, test_fraction=0.3, image_column="image"))
        assert "\n" not in str(err.value)


def test_unlabelled_rows_are_left_out_with_a_note(tmp_path, capsys):
    images, labels = rows((4, 4, 3))
    labels[0] = labels[5] = -1  # ClassLabel's "no label"
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    folder = tmp_path / "unlabelled"
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(str(folder))
    train, test = load_train_test(config(folder, test_fraction=0.3))
    assert len(train) + len(test) == 9 and "2 unlabelled row(s) (label -1)" in capsys.readouterr().err


@pytest.mark.parametrize("image_size", [8, None])
def test_a_dataset_read_into_an_on_disk_store_gives_the_in_memory_pixels(on_disk, tmp_path, monkeypatch, image_size):
    """$DIFFBALANCE_STORE=disk: the rows decoded a chunk at a time into an image store (data.store), the odd and the
    unreadable rows as in memory; the same pixels, labels and meta, read by index."""
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFBALANCE_STORE", "memory")
    memory = load_train_test(DataConfig(name="hf", root=str(on_disk), image_size=image_size))
    monkeypatch.setenv("DIFFBALANCE_STORE", "disk")
    disk = load_train_test(DataConfig(name="hf", root=str(on_disk), image_size=image_size))
    for m, d in zip(memory, disk):
        assert d.stored and not m.stored
        assert torch.equal(d.images[:], m.images) and torch.equal(d.labels, m.labels)
        assert d.meta["unreadable_report"] == m.meta["unreadable_report"] if m.meta.get("unreadable_count") else True
        assert d.meta["class_names_from"] == m.meta["class_names_from"]
