"""Devices: resolved once, at an entry point, and passed down as a `torch.device`.

Every public entry (the commands, `prepare_stage`, `rebalance_folder`, `train_classifier`, `Rebalancer.fit`, `fid`,
`TrainedClassifier.load`, `load_generator`, `train_generator`, …) takes "auto", "cpu", "cuda", "cuda:N" or a
torch.device and calls `entry_device` on it once; everything below takes the `torch.device` it is given.
`resolve_device` is the pure part (names checked, "auto" → CUDA when present; under torchrun / accelerate a CUDA
device is the rank's own, cuda:LOCAL_RANK); `entry_device` also joins the launched job — an explicit step of the
entries (diffbalance.infra.distributed.join), never a side effect of resolving. GPU-only speedups hang off
`fast_gpu_path`.
"""

from __future__ import annotations

import os

import torch

from diffbalance.infra import distributed
from diffbalance.infra.errors import DiffbalanceError

DeviceLike = str | torch.device  # what every public function accepts: "auto", "cpu", "cuda", "cuda:1" or a device


def resolve_device(device: DeviceLike = "auto") -> torch.device:
    """"auto" → cuda if available else cpu; "cpu", "cuda", "cuda:N" or a torch.device → that device, checked. Under a
    launcher (torchrun sets LOCAL_RANK) a CUDA device without an index is the rank's GPU. Pure: joins nothing."""
    if isinstance(device, torch.device):
        spec = device
    elif device == "auto":
        spec = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str):
        try:
            spec = torch.device(device)
        except RuntimeError:
            raise DiffbalanceError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N") from None
    else:
        raise DiffbalanceError(f"device {device!r} is not a device name", "use auto, cpu, cuda or cuda:N")
    if spec.type not in ("cpu", "cuda"):
        raise DiffbalanceError(f"device {spec} is not supported", "use auto, cpu, cuda or cuda:N")
    if spec.type == "cuda":
        if not torch.cuda.is_available():
            raise DiffbalanceError(f"device {spec} requested but CUDA is not available", "use --device cpu or auto")
        if spec.index is None and distributed.launched():
            spec = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))  # one GPU per process
        if spec.index is not None and spec.index >= torch.cuda.device_count():
            raise distributed.RankError(f"device {spec} does not exist ({torch.cuda.device_count()} GPUs on this "
                                        "node)", "launch at most one process per GPU, or use --device cpu")
    return spec


def entry_device(device: DeviceLike = "auto") -> torch.device:
    """An entry point's device argument, resolved once; under a launcher the job is joined here (explicitly)."""
    return distributed.join(resolve_device(device))


def fast_gpu_path(device: torch.device) -> bool:
    """bf16 autocast, channels_last and TF32 are used only on CUDA; the CPU path stays plain fp32."""
    return device.type == "cuda"


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
