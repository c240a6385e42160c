"""One mechanism for training checkpoints: model(s), optimizer and LR scheduler as ONE safetensors file plus ONE JSON.

No pickles (a checkpoint never carries code): tensors go to safetensors, everything else to JSON, and a folder is
written to a temporary sibling and renamed into place, so a crash never leaves half a checkpoint; a full disk is one
`DiskFullError` line naming the folder, and the previous checkpoint stays as it was (diffbalance.infra.atomic).

    <folder>/state.safetensors   "<module>.<name>" for each module's state_dict (e.g. model.*, ema.*),
                                 "optimizer.<param index>.<key>" for the optimizer's tensor state (AdamW's 0-dim step)
    <folder>/state.json          the caller's meta (step/epoch, config, seed, …) + optimizer_param_groups,
                                 optimizer_plain_state (non-tensor optimizer state) and scheduler (its state_dict)

The classifier's `resume/` folder has used exactly this layout (modules = {"model": …}) from the start, so old run
folders resume unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from diffbalance.infra.atomic import atomic_path
from diffbalance.infra.errors import DiffbalanceError

STATE_FILE, STATE_META = "state.safetensors", "state.json"
OPTIMIZER = "optimizer"  # key prefix of the optimizer's tensors; no module may take this name


def _plain(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors that share no memory (safetensors' terms), in the same order. Tensors on a GPU come
    back as one flat copy per (device, dtype), not one blocking copy per tensor."""
    out: dict[str, torch.Tensor] = {}
    on_device: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
    for k, v in tensors.items():
        v = v.detach()
        if v.device.type == "cpu":  # channels_last weights are copied out to the standard layout
            out[k] = v.to(memory_format=torch.contiguous_format).clone()
        else:
            on_device.setdefault((v.device, v.dtype), []).append((k, v))
    for group in on_device.values():
        out.update(flat_to_cpu(group))
    return {k: out[k] for k in tensors}


def flat_to_cpu(group: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Tensors of one device and dtype → CPU copies through one flat buffer (one transfer), each its own memory."""
    flat = torch.cat([v.reshape(-1) for _, v in group]).cpu()  # reshape: logical (standard-layout) order
    parts = flat.split([v.numel() for _, v in group])
    return {k: part.view(v.shape).clone() for (k, v), part in zip(group, parts)}


def write_folder(folder: Path, tensor_file: str, tensors: Mapping[str, torch.Tensor], meta_file: str, meta: dict) -> None:
    """`folder`/`tensor_file` (safetensors) + `folder`/`meta_file` (JSON), written atomically as one folder."""
    with atomic_path(Path(folder)) as tmp:
        tmp.mkdir(parents=True)
        save_file(_plain(tensors), str(tmp / tensor_file))
        (tmp / meta_file).write_text(json.dumps(meta, indent=2) + "\n")


def read_folder(folder: Path, tensor_file: str, meta_file: str, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    """What `write_folder` wrote (tensors on the CPU); a missing or unreadable folder is a one-line error."""
    folder = Path(folder)
    if not (folder / tensor_file).is_file() or not (folder / meta_file).is_file():
        raise DiffbalanceError(f"{folder} is not a saved {what} (no {tensor_file} and {meta_file})",
                               f"pass the folder a {what} was saved to")
    try:
        return load_file(str(folder / tensor_file)), json.loads((folder / meta_file).read_text())
    except (OSError, ValueError, SafetensorError) as err:  # unreadable, truncated or not JSON
        raise DiffbalanceError(f"cannot read the {what} in {folder} ({err})", "re-create it") from None


@dataclass(frozen=True)
class TrainingState:
    """A loaded checkpoint: its tensors (CPU) and its JSON. `restore` puts it into freshly built objects."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def restore(
        self,
        modules: Mapping[str, nn.Module],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        """Load weights, optimizer buffers (+ param groups) and scheduler state in place."""
        for name, module in modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)})
        state: dict[int, dict[str, Any]] = {}
        for key, value in self.tensors.items():
            if key.startswith(f"{OPTIMIZER}."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, plain in self.meta.get("optimizer_plain_state", {}).items():
            state.setdefault(int(index), {}).update(plain)
        optimizer.load_state_dict({"state": state, "param_groups": self.meta["optimizer_param_groups"]})
        if scheduler is not None:
            scheduler.load_state_dict(self.meta["scheduler"])


def save_training_state(
    folder: Path,
    modules: Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write `modules` (name → module), the optimizer and the scheduler to `folder` (see the module header)."""
    if OPTIMIZER in modules:
        raise ValueError(f"a module may not be named {OPTIMIZER!r}: its keys would clash with the optimizer's")
    tensors = {f"{name}.{k}": v for name, module in modules.items() for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    plain: dict[str, dict[str, Any]] = {}
    for index, param_state in opt["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIMIZER}.{index}.{key}"] = value  # 0-dim tensors (AdamW's step) keep their shape
            else:
                plain.setdefault(str(index), {})[key] = value
    full = {**(meta or {}), "optimizer_param_groups": opt["param_groups"], "optimizer_plain_state": plain}
    if scheduler is not None:
        full["scheduler"] = scheduler.state_dict()
    write_folder(folder, STATE_FILE, tensors, STATE_META, full)


def load_training_state(folder: Path) -> TrainingState | None:
    """The checkpoint in `folder`, or None when the folder holds none."""
    if not (Path(folder) / STATE_META).is_file():
        return None
    return TrainingState(*read_folder(folder, STATE_FILE, STATE_META, "training checkpoint"))
