"""`train_generator_for`: Method 1's generator trained on a dataset cut by a profile (the `train-generator` command)."""

from __future__ import annotations

from pathlib import Path

from diffbalance.infra import distributed
from diffbalance.infra.atomic import check_writable, write_json
from diffbalance.data.sources import DataConfig, load_train_test
from diffbalance.infra.device import DeviceLike, entry_device
from diffbalance.generate.cfg.config import CFGTrainConfig, check_pixel_size
from diffbalance.generate.cfg.train import check_resume, train_generator
from diffbalance.imbalance.subset import ImbalanceConfig, apply_profile


def train_generator_for(
    data: DataConfig,
    imbalance: ImbalanceConfig,
    config: CFGTrainConfig,
    out: Path | str,
    device: DeviceLike = "auto",
    resume: bool = True,
    progress: bool = True,
    compile: bool = False,
) -> Path:
    """Load and cut the training set, record the resolved options in OUT/command.json, train (or resume) the
    generator into OUT; returns the generator folder. Device, output folder, data and profile are checked before
    anything is written; one process at a time trains into OUT."""
    device = entry_device(device)
    out = check_writable(Path(out))

    def checked():  # rank 0 first (it fills the data cache)
        train, _ = load_train_test(data)
        imbalanced = apply_profile(train, imbalance)
        if config.vae is None:  # a pixel-space UNet (a latent one works at any size)
            check_pixel_size(imbalanced.image_size)
        check_resume(out, config, imbalanced, resume)
        return imbalanced

    imbalanced = distributed.main_first(checked)
    with distributed.held_output(out):
        distributed.on_main(lambda: write_json(out / "command.json", {
            "data": data.to_dict(), "imbalance": imbalance.to_dict(), "train": config.to_dict(), "resume": resume,
            "device": str(device), "world_size": distributed.current().world_size, "train_counts": imbalanced.counts()}))
        return train_generator(imbalanced, config, out, device, progress=progress, resume=resume, compile=compile)
