"""Read-only support for CFG generator folders written before the pipeline layout (cfg/generator.py):

    <out>/unet/                            the final EMA UNet + generator.json (with "noise_schedule")
    <out>/checkpoint-<step>/unet/          the same, per checkpoint
    <out>/checkpoint-<step>/train_state/   model.safetensors, ema.safetensors, optimizer.safetensors (AdamW's 0-dim
                                           step saved with shape (1,)), state.json {step, param_groups, config}

Such folders sample as before, resume training, and a finished one gets the pipeline's root files added
(train.train_generator); nothing here writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusers import UNet2DModel
from safetensors.torch import load_file

from diffbalance.infra.checkpoint import TrainingState
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.unet import null_class, unet_sample_size
from diffbalance.generate.schedulers import forward_process

INFO_FILE = "generator.json"


def unet_folder(path: Path) -> Path | None:
    """`path` or `path/unet` when it is a diffusers UNet folder with safetensors weights, else None."""
    for folder in (Path(path), Path(path) / "unet"):
        if (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file():
            return folder
    return None


def read_info(folder: Path, unet: UNet2DModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """(generator.json, forward process) of an older UNet folder; a bare diffusers UNet gets no padding and the
    paper's DDPM schedule."""
    path = Path(folder) / INFO_FILE
    if path.is_file():
        info = json.loads(path.read_text())
    else:
        info = {"num_classes": null_class(unet), "image_size": list(unet_sample_size(unet)),
                "channels": unet.config.in_channels, "noise_schedule": CFGTrainConfig().noise_schedule()}
    return info, forward_process(info["noise_schedule"])


def finished_run_info(out_dir: Path) -> dict[str, Any] | None:
    """generator.json of a finished run in the older layout (out/unet/generator.json), else None."""
    path = Path(out_dir) / "unet" / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_training_state(state_dir: Path) -> bool:
    return (Path(state_dir) / "model.safetensors").is_file() and (Path(state_dir) / "state.json").is_file()


def training_state(state_dir: Path) -> TrainingState:
    """An older train_state/ as the shared checkpoint format reads it (modules "model" and "ema")."""
    state_dir = Path(state_dir)
    meta = json.loads((state_dir / "state.json").read_text())
    tensors = {f"{name}.{k}": v for name in ("model", "ema")
               for k, v in load_file(str(state_dir / f"{name}.safetensors")).items()}
    for key, value in load_file(str(state_dir / "optimizer.safetensors")).items():
        _, name = key.split(".", 1)
        tensors[f"optimizer.{key}"] = value.reshape(()) if name == "step" else value
    return TrainingState(tensors, {"step": meta["step"], "config": meta["config"],
                                   "optimizer_param_groups": meta["param_groups"], "optimizer_plain_state": {}})
