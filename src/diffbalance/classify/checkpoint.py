"""Files of a trained classifier and of a resumable training run: safetensors for tensors, JSON for the rest.

No pickles: a folder holds `<name>.safetensors` (plain tensors only) and `<name>.json` (config, epoch, seed,
scheduler state, class names, normalisation). Each folder is written to a temporary sibling and renamed into
place, so a crash never leaves a half-written checkpoint.

    classifier/  model.safetensors, classifier.json     (TrainedClassifier.save / load)
    <checkpoint_dir>/resume/  state.safetensors, state.json   (train_classifier's periodic checkpoint)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from diffbalance.atomic import atomic_path
from diffbalance.errors import DiffbalanceError

MODEL_FILE, MODEL_META = "model.safetensors", "classifier.json"
STATE_FILE, STATE_META = "state.safetensors", "state.json"
RESUME_FOLDER = "resume"


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors that share no memory (channels_last/CUDA weights are copied out)
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone() for k, v in tensors.items()}


def _write_folder(folder: Path, tensor_file: str, tensors: dict, meta_file: str, meta: dict) -> None:
    with atomic_path(Path(folder)) as tmp:
        tmp.mkdir(parents=True)
        save_file(_plain(tensors), str(tmp / tensor_file))
        (tmp / meta_file).write_text(json.dumps(meta, indent=2) + "\n")


def _read_folder(folder: Path, tensor_file: str, meta_file: str, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    folder = Path(folder)
    if not (folder / tensor_file).is_file() or not (folder / meta_file).is_file():
        raise DiffbalanceError(
            f"{folder} is not a saved {what} (no {tensor_file} and {meta_file})",
            f"pass the folder a {what} was saved to",
        )
    try:
        return load_file(str(folder / tensor_file)), json.loads((folder / meta_file).read_text())
    except (OSError, ValueError, SafetensorError) as err:  # unreadable, truncated or not JSON
        raise DiffbalanceError(f"cannot read the {what} in {folder} ({err})", "re-create it") from None


# --- a trained classifier -------------------------------------------------------------------------------------


def save_classifier(folder: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Weights to model.safetensors, everything needed to rebuild and feed the model to classifier.json."""
    _write_folder(folder, MODEL_FILE, model.state_dict(), MODEL_META, meta)


def load_classifier_files(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return _read_folder(folder, MODEL_FILE, MODEL_META, "classifier")


# --- a resumable training run ---------------------------------------------------------------------------------


def save_train_state(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    meta: dict[str, Any],
) -> None:
    """Model weights and optimizer buffers as tensors; param groups, scheduler state and `meta` as JSON."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_plain: dict[str, dict[str, Any]] = {}
    for index, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                opt_plain.setdefault(str(index), {})[key] = value
    meta = {
        **meta,
        "optimizer_param_groups": opt["param_groups"],
        "optimizer_plain_state": opt_plain,
        "scheduler": scheduler.state_dict(),
    }
    _write_folder(folder, STATE_FILE, tensors, STATE_META, meta)


def load_train_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The saved tensors and JSON of a run, or None when the folder holds no checkpoint."""
    if not (Path(folder) / STATE_META).is_file():
        return None
    return _read_folder(folder, STATE_FILE, STATE_META, "training checkpoint")


def restore_train_state(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Load what `save_train_state` wrote into freshly built model/optimizer/scheduler (in place)."""
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, plain in meta["optimizer_plain_state"].items():
        state.setdefault(int(index), {}).update(plain)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
