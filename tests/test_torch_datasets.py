"""RebalancedDataset and class_balanced_sampler (classify.datasets): items, class matching, transforms, the
sampler's balance and seeding, and the README's training loop run as it is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from diffbalance import RebalancedDataset, class_balanced_sampler
from diffbalance.data.image_folder import load_image_folder, write_image_folder
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.rebalance.registry import build_rebalancer
from diffbalance.rebalance.store import fill

# The README's loop, verbatim (test_the_readme_loop_runs_as_written checks that the README holds exactly this),
# run on tiny data below.
README_LOOP = """\
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from diffbalance import RebalancedDataset, class_balanced_sampler

transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)])
data = RebalancedDataset("lt/train", fills="fills/cfg", transform=transform)  # real images + a rebalance fill
loader = DataLoader(data, batch_size=64, sampler=class_balanced_sampler(data.labels, seed=0))
model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(32, len(data.class_names)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for images, labels, is_synthetic in loader:  # one epoch
    loss = nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""

CLASSES = ("ant", "bee", "cat")
COUNTS = (6, 3, 2)


def lt_set() -> ImageSet:
    """Three classes of 32×32 RGB images, 6 / 3 / 2 of them, each image distinct."""
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet(images, labels, CLASSES, "lt")


def make_lt_and_fill(root: Path) -> tuple[Path, Path]:
    """root/lt/train (an image folder) and root/fills/cfg (an oversample fill of it: 0 / 3 / 4 copies)."""
    real = write_image_folder(lt_set(), root / "lt" / "train")
    fill(build_rebalancer("oversample"), load_image_folder(real), root / "fills" / "cfg", progress=False)
    return root / "lt" / "train", root / "fills" / "cfg"


def test_items_labels_and_synthetic_flags(tmp_path):
    real, fills = make_lt_and_fill(tmp_path)
    data = RebalancedDataset(real, fills=fills)
    assert len(data) == 11 + 7 and data.class_names == CLASSES
    assert data.labels.tolist() == [0] * 6 + [1] * 3 + [2] * 2 + [1] * 3 + [2] * 4
    assert data.synthetic.tolist() == [False] * 11 + [True] * 7 and data.synthetic.dtype == torch.bool
    image, label, is_synthetic = data[12]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert label == 1 and is_synthetic is True
    assert data[0][2] is False and isinstance(data[0][1], int)
    # oversampling copies real images of the class: every fill image equals a real image with its label
    for k in range(11, 18):
        same = (data.images[:11] == data.images[k]).flatten(1).all(1)
        assert data.labels[:11][same].tolist() == [data.labels[k].item()]


def test_fill_classes_are_matched_by_name(tmp_path):
    real = lt_set()
    order = ("cat", "ant", "bee")  # the same classes, listed in another order
    relabel = torch.tensor([order.index(name) for name in CLASSES])
    shuffled = ImageSet(real.images, relabel[real.labels], order, "shuffled")
    fill(build_rebalancer("oversample"), shuffled, tmp_path / "fill", progress=False)  # its classes.json: cat, ant, bee
    expected = {"folder": ["cat"] * 4 + ["bee"] * 3, "ImageSet": [order[y] for y in shuffled.labels.tolist()]}
    for kind, fills in (("folder", tmp_path / "fill"), ("ImageSet", shuffled)):
        data = RebalancedDataset(real, fills=fills)
        assert [CLASSES[y] for y in data.labels[11:].tolist()] == expected[kind]
        for k in range(11, len(data)):  # each image is a real image of the class it is labelled with
            same = (real.images == data.images[k]).flatten(1).all(1)
            assert set(real.labels[same].tolist()) == {data.labels[k].item()}


def test_several_fills_and_a_fill_with_an_unknown_class(tmp_path):
    real, fills = make_lt_and_fill(tmp_path)
    extra = ImageSet(torch.zeros((2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1]), ("cat", "bee"), "extra")
    data = RebalancedDataset(real, fills=[fills, extra])
    assert len(data) == 20 and data.labels[-2:].tolist() == [2, 1] and data.synthetic[-2:].all()
    zebra = ImageSet(torch.zeros((1, 3, 32, 32), dtype=torch.uint8), torch.tensor([1]), ("ant", "zebra"), "zoo")
    with pytest.raises(DiffbalanceError, match="'zebra'") as err:
        RebalancedDataset(real, fills=[fills, zebra])
    assert "\n" not in str(err.value) and "fix:" in str(err.value)
    small = ImageSet(torch.zeros((1, 3, 8, 8), dtype=torch.uint8), torch.tensor([0]), CLASSES, "small")
    with pytest.raises(DiffbalanceError, match="image_size"):
        RebalancedDataset(real, fills=small)
    with pytest.raises(DiffbalanceError, match="not a fill folder"):
        RebalancedDataset(real, fills=real)
    (fills / "complete.json").unlink()
    with pytest.raises(DiffbalanceError, match="not finished"):
        RebalancedDataset(real, fills=fills)


def test_the_transform_is_applied_to_each_image(tmp_path):
    real, fills = make_lt_and_fill(tmp_path)
    crop = v2.Compose([v2.CenterCrop(16), v2.ToDtype(torch.float32, scale=True)])
    data = RebalancedDataset(real, fills=fills, transform=crop)
    image, _, _ = data[15]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 16)
    assert torch.allclose(image, data.images[15, :, 8:24, 8:24].float() / 255)


def test_the_sampler_draws_classes_uniformly_and_is_seeded():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    rng_before = torch.get_rng_state()
    draws = torch.tensor(list(class_balanced_sampler(labels, num_samples=30000, seed=3)))
    assert torch.equal(torch.get_rng_state(), rng_before)  # its own generator, never the global RNG
    share = torch.bincount(labels[draws], minlength=3).double() / len(draws)
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.015)
    a, b = class_balanced_sampler(labels, seed=3), class_balanced_sampler(labels, seed=3)
    assert len(a) == 100 and list(a) == list(b) and list(a) != list(class_balanced_sampler(labels, seed=4))
    assert sorted(set(class_balanced_sampler(labels, 100, seed=0, replacement=False))) == list(range(100))
    with pytest.raises(DiffbalanceError, match="num_samples"):
        class_balanced_sampler(labels, num_samples=101, replacement=False)


def test_the_readme_loop_runs_as_written(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert README_LOOP in readme  # the README shows exactly the loop this test runs
    make_lt_and_fill(tmp_path)
    monkeypatch.chdir(tmp_path)  # the README's relative paths: lt/train and fills/cfg
    scope: dict = {}
    exec(compile(README_LOOP, "README.md", "exec"), scope)
    assert torch.isfinite(scope["loss"]) and len(scope["data"]) == 18
    assert scope["images"].dtype == torch.float32 and scope["images"].shape[1:] == (3, 32, 32)
