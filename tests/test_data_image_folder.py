"""Image folders: the one reader (resize or keep size, grey/RGB, one extension list), unreadable files, one-line
errors, the stratified split, the one PNG writer (atomic files, class listing)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import write_image_tree
from PIL import Image

from diffbalance.data import image_folder
from diffbalance.data.image_folder import (
    IMAGE_EXTENSIONS, class_folders, folder_name, load_image_folder, read_image, stratified_split,
    write_class_listing, write_image_folder, write_png,
)
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError


def test_reads_classes_sorted_and_files_in_name_order(tmp_path):
    arrays = write_image_tree(tmp_path, {"cat": 3, "ant": 2}, size=(8, 8))
    data = load_image_folder(tmp_path, image_size=8, channels=3)
    assert data.class_names == ("ant", "cat")
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    expected = np.stack(arrays["ant"] + arrays["cat"]).transpose(0, 3, 1, 2)
    assert torch.equal(data.images, torch.from_numpy(expected))  # PNG: lossless, no resize at 8×8


def test_resizes_and_converts_to_grayscale(tmp_path):
    write_image_tree(tmp_path, {"a": 2, "b": 2}, size=(12, 10), ext=".jpg")
    rgb = load_image_folder(tmp_path, image_size=6, channels=3)
    gray = load_image_folder(tmp_path, image_size=6, channels=1)
    assert rgb.images.shape == (4, 3, 6, 6) and gray.images.shape == (4, 1, 6, 6)


def test_unreadable_file_is_skipped_with_a_report_or_rejected(tmp_path, capsys):
    write_image_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    data = load_image_folder(tmp_path, image_size=8)  # a one-line note, not a warning (see test_image_reader.py)
    assert len(data) == 4 and data.meta["unreadable_count"] == 1
    assert "1 unreadable image(s) of 5" in capsys.readouterr().err and "b/broken.png" in data.meta["unreadable_report"]
    with pytest.raises(DiffbalanceError, match="broken.png") as err:
        load_image_folder(tmp_path, image_size=8, on_corrupt="error")
    assert "\n" not in str(err.value)


def test_missing_empty_and_classless_folders_are_errors(tmp_path):
    with pytest.raises(DiffbalanceError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DiffbalanceError, match="no class subfolders"):
        load_image_folder(tmp_path)
    write_image_tree(tmp_path, {"a": 2}, size=(8, 8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DiffbalanceError, match="empty"):
        load_image_folder(tmp_path)


def test_bad_options_are_errors(tmp_path):
    write_image_tree(tmp_path, {"a": 1}, size=(8, 8))
    for kwargs in ({"channels": 2}, {"image_size": 0}, {"on_corrupt": "ignore"}):
        with pytest.raises(DiffbalanceError):
            load_image_folder(tmp_path, **kwargs)


def _toy(n_per_class=(10, 20, 30)) -> ImageSet:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return ImageSet(images, labels, ("x", "y", "z"), "toy")


def test_stratified_split_is_seeded_and_stratified():
    data = _toy()
    train, test = stratified_split(data, 0.2, seed=3)
    again, _ = stratified_split(data, 0.2, seed=3)
    other, _ = stratified_split(data, 0.2, seed=4)
    assert test.counts() == [2, 4, 6] and train.counts() == [8, 16, 24]
    assert torch.equal(train.images, again.images) and not torch.equal(train.images, other.images)
    ids = torch.cat([train.images[:, 0, 0, 0], test.images[:, 0, 0, 0]]).sort().values
    assert torch.equal(ids, torch.arange(60, dtype=torch.uint8))  # disjoint and complete
    with pytest.raises(DiffbalanceError, match="too few"):
        stratified_split(_toy((1, 5, 5)), 0.2, seed=0)


def test_writer_round_trips_names_order_and_pixels(tmp_path):
    labels = torch.tensor([1, 2, 1, 2, 0])
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = ImageSet(images, labels, ("T-shirt/top", "Bag", "Ankle boot"), "toy")
    out = write_image_folder(data, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["Ankle boot", "Bag", "T-shirt_top", "classes.json"]
    assert [p.name for p in sorted((out / "Bag").iterdir())] == ["00000.png", "00001.png"]
    assert json.loads((out / "classes.json").read_text())["counts"] == [1, 2, 2]
    back = load_image_folder(out, image_size=4)
    assert back.class_names == data.class_names  # order and names from classes.json, not the folder names
    order = torch.argsort(labels, stable=True)
    assert torch.equal(back.images, images[order]) and torch.equal(back.labels, labels[order])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    (out / "T-shirt_top" / "00000.png").unlink()  # a class listed in classes.json with no images is an error too
    with pytest.raises(DiffbalanceError, match="has no images"):
        load_image_folder(out, image_size=4)


def test_folder_names_are_safe():
    assert folder_name("T-shirt/top") == "T-shirt_top" and folder_name("..") == "class"


def test_grayscale_png_round_trip(tmp_path):
    data = ImageSet(torch.randint(0, 256, (3, 1, 5, 5), dtype=torch.uint8), torch.tensor([0, 1, 1]), ("a", "b"))
    write_image_folder(data, tmp_path / "g")
    assert Image.open(tmp_path / "g" / "b" / "00000.png").mode == "L"
    assert torch.equal(load_image_folder(tmp_path / "g", image_size=5, channels=1).images, data.images)


def test_keep_size_mode_reads_every_image_as_it_is(tmp_path):
    arrays = write_image_tree(tmp_path, {"b": 2, "a": 1}, size=(12, 10))
    data = load_image_folder(tmp_path)  # no image_size: no resize, no crop
    assert data.images.shape == (3, 3, 12, 10)
    expected = np.stack(arrays["a"] + arrays["b"]).transpose(0, 3, 1, 2)
    assert torch.equal(data.images, torch.from_numpy(expected))
    assert read_image(tmp_path / "a" / "img_00.png").shape == (3, 12, 10)
    assert read_image(tmp_path / "a" / "img_00.png", image_size=6).shape == (3, 6, 6)


def test_keep_size_mode_for_fid_rejects_mixed_sizes_in_one_line(tmp_path):
    write_image_tree(tmp_path, {"a": 1}, size=(8, 8))
    write_image_tree(tmp_path, {"b": 1}, size=(9, 8))
    assert load_image_folder(tmp_path).images.shape == (2, 3, 8, 8)  # by default: the median side, with a note
    with pytest.raises(DiffbalanceError, match=r"differ in size.*8×8.*b/img_00\.png is 9×8") as err:
        load_image_folder(tmp_path, mixed_sizes="error")
    assert "\n" not in str(err.value)
    assert load_image_folder(tmp_path, image_size=8).images.shape == (2, 3, 8, 8)  # resizing makes them one size


def test_channels_none_keeps_grey_and_makes_a_mixed_folder_rgb(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    (tmp_path / "g" / "grey").mkdir(parents=True)
    Image.fromarray(grey).save(tmp_path / "g" / "grey" / "0.png")
    Image.fromarray(grey).convert("LA").save(tmp_path / "g" / "grey" / "1.png")  # grey + alpha: alpha dropped
    assert load_image_folder(tmp_path / "g").images.shape == (2, 1, 6, 6)  # all grey: one channel
    (tmp_path / "g" / "rgba").mkdir()
    Image.fromarray(rgba).save(tmp_path / "g" / "rgba" / "0.png")
    data = load_image_folder(tmp_path / "g")
    assert data.images.shape == (3, 3, 6, 6) and data.class_names == ("grey", "rgba")
    assert torch.equal(data.images[0], torch.from_numpy(grey).expand(3, -1, -1))  # grey repeated to RGB
    assert torch.equal(data.images[2], torch.from_numpy(rgba[:, :, :3]).permute(2, 0, 1))  # alpha dropped
    assert load_image_folder(tmp_path / "g", channels=1).images.shape == (3, 1, 6, 6)


def test_one_extension_list_for_every_reader(tmp_path):
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} <= set(IMAGE_EXTENSIONS)
    (tmp_path / "a").mkdir()
    image = Image.fromarray(np.full((5, 7, 3), 200, dtype=np.uint8))
    for i, ext in enumerate(IMAGE_EXTENSIONS):
        image.save(tmp_path / "a" / f"{i}{ext.upper() if i % 2 else ext}")  # suffixes match in any case
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path)
    assert len(data) == len(IMAGE_EXTENSIONS) and data.images.shape[1:] == (3, 5, 7)
    assert not hasattr(importlib.import_module("diffbalance.cli.fid"), "IMAGE_SUFFIXES")  # no second list


def test_class_folders_are_safe_and_case_insensitively_unique():
    names = ["a", "A", "T-shirt/top", "T-shirt_top", ".."]
    assert class_folders(names) == ["a", "A_2", "T-shirt_top", "T-shirt_top_2", "class"]


def test_write_png_is_atomic_and_creates_the_folder(tmp_path, monkeypatch):
    image = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "new" / "deeper" / "00000.png"
    write_png(image, path)
    assert [p.name for p in path.parent.iterdir()] == ["00000.png"]  # no temporary sibling left
    assert torch.equal(read_image(path), image)
    write_png(torch.zeros(1, 4, 5, dtype=torch.uint8), path)  # replaces the file in place
    assert read_image(path).shape == (1, 4, 5)

    def crash(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        write_png(image, tmp_path / "other" / "00001.png")
    assert list((tmp_path / "other").iterdir()) == []  # neither a half file nor a temporary one
    with pytest.raises(ValueError, match="uint8"):
        write_png(image.float(), path)


def test_class_listing_fixes_names_and_order(tmp_path):
    for folder in ("z_first", "a_second"):
        write_png(torch.zeros(3, 2, 2, dtype=torch.uint8), tmp_path / folder / "00000.png")
    write_class_listing(tmp_path, ["first/1", "second"], ["z_first", "a_second"])
    listing = json.loads((tmp_path / "classes.json").read_text())
    assert listing == {"class_names": ["first/1", "second"], "folders": ["z_first", "a_second"]}
    assert load_image_folder(tmp_path).class_names == ("first/1", "second")
    write_class_listing(tmp_path, ["first/1", "second"], ["z_first", "a_second"], counts=[1, 1])
    assert json.loads((tmp_path / "classes.json").read_text())["counts"] == [1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_second", "classes.json", "z_first"]


def test_image_folder_writer_uses_the_one_png_writer(tmp_path, monkeypatch):
    written = []
    real = image_folder.write_png
    monkeypatch.setattr(image_folder, "write_png", lambda image, path: (written.append(path), real(image, path)))
    data = ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1]), ("a", "b"))
    write_image_folder(data, tmp_path / "out")
    assert len(written) == 3
