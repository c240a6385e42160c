"""Your data at its own size: folders and Hugging Face datasets keep the images' size when they share one (a mixed
folder is made one size, said in one line), and the fills, classifiers, FID and report work at 28 to 224 px."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from diffbalance.cli.main import main
from diffbalance.data.sources import DataConfig, load_train_test
from diffbalance.infra.errors import DiffbalanceError


def write_folder(root: Path, counts: dict[str, int], size=(300, 200), vary: int = 0) -> Path:
    """PNG images of `size` (H, W) — image i of a class `vary`·i pixels shorter — class k brighter than k − 1."""
    rng = np.random.default_rng(0)
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            h, w = size[0] - vary * i, size[1]
            pixels = np.clip(60 * k + rng.integers(0, 80, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def fill_sizes(folder: Path) -> set[tuple[int, int]]:
    return {Image.open(p).size[::-1] for p in folder.glob("*/*.png")}  # (H, W)


def test_rebalance_keeps_the_size_of_a_folder_of_large_images(tmp_path, capsys):
    """The user's 200×300 PNGs, 12 and 3 per class, rebalanced with default options: 300×200 (H×W) fills."""
    data = write_folder(tmp_path / "big", {"ok": 12, "defect": 3})
    main(["rebalance", str(data), "--method", "oversample", "--out", str(tmp_path / "fills")])
    assert fill_sizes(tmp_path / "fills") == {(300, 200)}
    assert "9 images of 300×200 written" in capsys.readouterr().out


def test_a_folder_of_mixed_sizes_is_made_one_size_with_a_note(tmp_path, capsys):
    data = write_folder(tmp_path / "mixed", {"a": 5, "b": 5}, size=(60, 40), vary=4)  # heights 60 … 44, width 40
    train, _ = load_train_test(DataConfig(name="folder", root=str(data), cache=False, test_fraction=0.2))
    assert train.image_size == (40, 40)  # the median shorter side: the width
    err = capsys.readouterr().err
    assert "have 5 sizes" in err and "each resized to 40×40" in err and "set image_size" in err
    sized, _ = load_train_test(DataConfig(name="folder", root=str(data), image_size=16, cache=False))
    assert sized.image_size == (16, 16)


@pytest.mark.parametrize("method", ["oversample", "mixup", "cutmix"])
@pytest.mark.parametrize("side", [28, 64, 224])
def test_classic_fills_have_the_inputs_resolution(tmp_path, method, side):
    data = write_folder(tmp_path / "d", {"a": 4, "b": 2}, size=(side, side))
    main(["rebalance", str(data), "--method", method, "--out", str(tmp_path / "fills")])
    assert fill_sizes(tmp_path / "fills") == {(side, side)}


@pytest.mark.parametrize("side", [32, 128, 224])
def test_a_run_works_at_the_images_own_size(tmp_path, side):
    """Fills, a classifier, FID (random features), class consistency and the report, on a folder at `side` px."""
    data = write_folder(tmp_path / "d", {"a": 8, "b": 4, "c": 8}, size=(side, side))
    config = {
        "name": "sizes", "data": {"name": "folder", "root": str(data), "test_fraction": 0.25, "cache": False},
        "methods": ["oversample", "mixup"], "classifiers": ["small_cnn"], "seeds": [0],
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.05, "warmup_epochs": 0},
        "consistency": True, "reference_images_per_class": 4, "fid": {"features": "random"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {r["method"] for r in results["runs"]} == {"oversample", "mixup"}
    assert fill_sizes(tmp_path / "run" / "fills" / "mixup") == {(side, side)}
    assert (tmp_path / "run" / "figures" / "fills_mixup.png").is_file()


def test_cfg_names_the_size_its_pixel_unet_cannot_train_at(tmp_path):
    from diffbalance.data.imageset import ImageSet
    from diffbalance.rebalance.registry import build_rebalancer

    import torch

    big = ImageSet(torch.zeros(4, 3, 128, 96, dtype=torch.uint8), torch.tensor([0, 0, 0, 1]), ("a", "b"))
    with pytest.raises(DiffbalanceError) as err:
        build_rebalancer("cfg", {}).check_data(big)
    assert "up to 64×64; these are 128×96" in str(err.value) and "ldm or ldm-img2img" in str(err.value)
    build_rebalancer("cfg", {"synthetic_share": 0.0}).check_data(big)  # all copies: no generator, any size
