"""`diffbalance fid A B`: FID between two image sets, with how it was measured.

A and B are image folders (one subfolder per class), fill folders of a run (with fill.json), or named datasets
such as `cifar10:train` or `fashion-mnist:test`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer

from diffbalance.atomic import write_json
from diffbalance.cli.app import app
from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def load_image_set(spec: str) -> ImageSet:
    """An ImageSet from one of:
    - an image folder (<class>/<images>), every image as it is;
    - a fill folder of a run (holds fill.json): the generated images alone;
    - RUN_DIR@METHOD: a finished run's rebalanced training set (imbalanced real + that method's fills);
    - NAME:SPLIT[:PROFILE=N]: a named dataset, optionally cut by a profile (linear=n_min, exponential=ratio,
      step=ratio), e.g. cifar10:train, cifar10:train:linear=500.
    """
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "fill.json").is_file():
        from diffbalance.rebalance.store import load_fill

        return load_fill(path, json.loads((path / "fill.json").read_text())["class_names"])
    if path.is_dir():
        return _load_folder(path)
    if "@" in spec and Path(spec.rsplit("@", 1)[0]).is_dir():
        from diffbalance.experiment.runner import load_rebalanced

        run_dir, method = spec.rsplit("@", 1)
        return load_rebalanced(Path(run_dir), method)
    if ":" in spec and not path.exists():
        return _named_dataset(spec)
    raise DiffbalanceError(f"{spec} is neither an image folder, RUN_DIR@METHOD nor NAME:SPLIT",
                           "pass a folder with one subfolder per class, a fill folder, runs/x@cfg, or e.g. cifar10:test")


def _named_dataset(spec: str) -> ImageSet:
    from diffbalance.data.sources import DataConfig, load_train_test
    from diffbalance.imbalance.subset import ImbalanceConfig, apply_profile

    name, split, *profile = spec.split(":")
    if split not in ("train", "test") or len(profile) > 1:
        raise DiffbalanceError(f"cannot read dataset spec {spec!r}", "use NAME:SPLIT or NAME:SPLIT:PROFILE=N, e.g. cifar10:train:linear=500")
    train, test = load_train_test(DataConfig(name=name))
    data = train if split == "train" else test
    if not profile:
        return data
    kind, _, value = profile[0].partition("=")
    try:
        number = float(value) if value else None
    except ValueError:
        raise DiffbalanceError(f"profile value {value!r} in {spec!r} is not a number", "write e.g. linear=500") from None
    if kind == "linear":
        return apply_profile(data, ImbalanceConfig(profile="linear", n_min=int(number) if number else None))
    return apply_profile(data, ImbalanceConfig(profile=kind, ratio=number or 10.0))


def _load_folder(root: Path) -> ImageSet:
    # not data.sources' folder loader: it resizes and holds out a test split; FID needs every image as it is
    return read_class_folders(root)


def read_class_folders(root: Path) -> ImageSet:
    """root/<class>/<image>: every image decoded with torchvision.io, classes in sorted order."""
    from torchvision.io import ImageReadMode, decode_image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                data = torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8)
                images.append(decode_image(data, mode=ImageReadMode.UNCHANGED))
                labels.append(c)
    if not images:
        raise DiffbalanceError(f"no images found in {root}", "put images in one subfolder per class")
    images = [im[:3] if im.shape[0] >= 3 else im[:1] for im in images]  # drop alpha
    if any(im.shape[0] == 3 for im in images):  # a mixed folder: grayscale repeated to RGB
        images = [im.expand(3, -1, -1) for im in images]
    if len({tuple(im.shape) for im in images}) > 1:
        raise DiffbalanceError(f"images in {root} differ in size or channels", "resize them to one size first")
    return ImageSet(torch.stack(images).contiguous(), torch.tensor(labels), tuple(classes), str(root))


@app.command("fid")
def fid_command(
    a: str = typer.Argument(..., help="image folder, fill folder, or NAME:SPLIT (e.g. cifar10:train)"),
    b: str = typer.Argument(..., help="image folder, fill folder, or NAME:SPLIT"),
    weights: Path = typer.Option(None, "--weights", "--fid-weights", help="Inception weights (TorchScript or .pth)"),
    features: str = typer.Option("inception", help="inception | domain (with --domain-classifier) | random (tests)"),
    domain_classifier: Path = typer.Option(None, help="domain features: a saved classifier folder, e.g. RUN/reference-classifier"),
    resize: str = typer.Option("bilinear-torch", help="bilinear-torch (pytorch-fid) | bilinear-tf1x (torch-fidelity)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    batch_size: int = typer.Option(64, help="images per forward pass"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write $DIFFBALANCE_CACHE"),
    json_out: Path = typer.Option(None, "--json", help="also write the result here (JSON)"),
) -> None:
    """FID (paper eq. 11) between two image sets; prints it with sample counts, resize, weights checksum."""
    from diffbalance.evaluate.fid import FidConfig, fid

    domain_model = None
    if features == "domain":
        if domain_classifier is None:
            raise DiffbalanceError("--features domain needs the classifier whose features it uses",
                                   "pass --domain-classifier RUN/reference-classifier (saved by `diffbalance run`)")
        from diffbalance.classify.train import TrainedClassifier
        from diffbalance.device import resolve_device

        domain_model = TrainedClassifier.load(domain_classifier, resolve_device(device))
    cfg = FidConfig(features=features, weights_path=str(weights) if weights else None, resize=resize,
                    batch_size=batch_size, device=device, cache=not no_cache)
    set_a, set_b = load_image_set(a), load_image_set(b)
    result = {"a": a, "b": b, **fid(set_a, set_b, cfg, domain_model=domain_model), "config": cfg.to_dict()}
    label = "domain-FID (not Inception FID)" if features == "domain" else f"FID ({features} features)"
    typer.echo(f"{label}: {result['fid']:.4f}")
    for key in ("n_a", "n_b", "features", "resize", "weights_sha256", "feature_dtype", "device", "seconds"):
        typer.echo(f"  {key}: {result[key]}")
    if json_out:
        write_json(json_out, result)
        typer.echo(f"  written: {json_out}")
