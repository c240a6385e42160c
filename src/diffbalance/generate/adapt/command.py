"""`adapt_dataset`: what `diffbalance adapt` runs once it has read the training set. Everything is checked before
anything is written (the model, the options against a folder that holds a run already), then OUT is locked (one
process at a time), what a killed run left half-written is removed, OUT/command.json records the options, and the
adaptation trains (or resumes) into OUT."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffbalance.infra import distributed
from diffbalance.infra.atomic import check_writable, output_lock, remove_stale_temps, write_json
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import DeviceLike, entry_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.adapt.config import AdaptConfig
from diffbalance.generate.adapt.setup import check_model
from diffbalance.generate.adapt.train import adapt_pipeline, check_resume


def adapt_dataset(
    train: ImageSet,
    model: str,
    config: AdaptConfig,
    out: Path | str,
    *,
    device: DeviceLike = "auto",
    resume: bool = True,
    progress: bool = True,
    command: Mapping[str, Any] | None = None,
) -> Path:
    """Adapt `model` to the classes of `train` into `out` (resumable); returns the adapter folder. `command`: what
    the caller wants recorded in OUT/command.json besides the model, the config and the device (the data spec)."""
    if distributed.current().world_size > 1:
        raise DiffbalanceError("adapt runs in one process", "run it without torchrun / accelerate launch")
    device = entry_device(device)
    out = check_writable(Path(out))
    check_model(model)  # unknown model, offline, no safetensors, not SD 1.x/2.x
    check_resume(out, model, config, train, resume)
    with output_lock(out):
        remove_stale_temps(out)
        write_json(out / "command.json", {**dict(command or {}), "model": model, "config": config.to_dict(),
                                          "device": str(device), "resume": resume, "train_counts": train.counts()})
        return adapt_pipeline(train, model, config, out, device, progress=progress, resume=resume)
