"""The device is resolved once, at the entry (CLI, runner, or the first library call), and passed down as a
`torch.device`. `auto` picks CUDA when present. Under torchrun / accelerate launch, resolving joins the process
group and a CUDA device becomes the rank's own GPU (`cuda:LOCAL_RANK`; diffbalance.infra.distributed). GPU-only speedups hang off `fast_gpu_path`."""

from __future__ import annotations

import torch

from diffbalance.infra import distributed
from diffbalance.infra.errors import DiffbalanceError

DeviceLike = str | torch.device  # what every public function accepts: "auto", "cpu", "cuda", "cuda:1" or a device


def resolve_device(device: DeviceLike | None = "auto") -> torch.device:
    """`auto` (or None) → cuda if available else cpu; "cpu", "cuda", "cuda:N" or a torch.device → checked device."""
    if isinstance(device, torch.device):
        spec = device
    elif device is None or device == "auto":
        return distributed.join(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
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
        if spec.index is not None and spec.index >= torch.cuda.device_count():
            raise DiffbalanceError(f"device {spec} does not exist ({torch.cuda.device_count()} GPUs)",
                                   f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    return distributed.join(spec)


def fast_gpu_path(device: torch.device) -> bool:
    """bf16 autocast, channels_last and TF32 are used only on CUDA; the CPU path stays plain fp32."""
    return device.type == "cuda"


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
