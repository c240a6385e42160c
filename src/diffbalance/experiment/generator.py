"""`train_generator_for`: Method 1's generator trained on a dataset cut by a profile (the `train-generator` command)."""

from __future__ import annotations

import json
from pathlib import Path

from diffbalance.atomic import check_writable, output_lock, remove_stale_temps, write_json
from diffbalance.data.imageset import ImageSet
from diffbalance.data.sources import DataConfig, load_train_test
from diffbalance.device import DeviceLike, resolve_device
from diffbalance.errors import DiffbalanceError
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.train import train_generator
from diffbalance.imbalance.subset import ImbalanceConfig, apply_profile


def train_generator_for(
    data: DataConfig,
    imbalance: ImbalanceConfig,
    config: CFGTrainConfig,
    out: Path | str,
    device: DeviceLike = "auto",
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Load and cut the training set, record the resolved options in OUT/command.json, train (or resume) the
    generator into OUT; returns the generator folder. Device, output folder, data and profile are checked before
    anything is written; one process at a time trains into OUT."""
    dev = resolve_device(device)
    out = check_writable(Path(out))
    train, _ = load_train_test(data)
    imbalanced = apply_profile(train, imbalance)
    check_resume(out, config, imbalanced, resume)
    with output_lock(out):
        remove_stale_temps(out)
        write_json(out / "command.json", {"data": data.to_dict(), "imbalance": imbalance.to_dict(),
                                          "train": config.to_dict(), "resume": resume, "device": str(dev),
                                          "train_counts": imbalanced.counts()})
        return train_generator(imbalanced, config, out, dev, progress=progress, resume=resume)


def check_resume(out: Path, config: CFGTrainConfig, train: ImageSet, resume: bool) -> None:
    """A folder that already holds a generator run may only be resumed, with the same settings and data."""
    path = out / "train_config.json"
    if not path.is_file():
        return
    if not resume:
        raise DiffbalanceError(f"{out} already holds a generator run", "pass --resume to continue it, or use a new --out")
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DiffbalanceError(f"{path} is damaged", "use a new --out, or delete the folder to start over") from None
    record = {"config": config.to_dict(), "classes": list(train.class_names),
              "image_shape": list(train.images.shape[1:]), "train_images": len(train)}
    if old != record:
        changed = sorted(k for k in record["config"] if old.get("config", {}).get(k) != record["config"][k])
        raise DiffbalanceError(
            f"{out} holds a generator trained with other settings ({', '.join(changed) or 'data'} differ)",
            "use a new output folder, or the same settings to resume")
