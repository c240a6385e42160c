"""Image folders: reading, resizing, unreadable files, one-line errors, the stratified split, the writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures_data import write_image_tree
from PIL import Image

from diffbalance.data.image_folder import folder_name, load_image_folder, stratified_split, write_image_folder
from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError


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


def test_unreadable_file_is_skipped_with_a_report_or_rejected(tmp_path):
    write_image_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match=r"1 unreadable image\(s\).*broken\.png"):
        data = load_image_folder(tmp_path, image_size=8)
    assert len(data) == 4 and data.meta["unreadable_count"] == 1
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
