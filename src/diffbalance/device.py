"""The device is passed in; `auto` picks CUDA when present. GPU-only speedups hang off `fast_gpu_path`."""

from __future__ import annotations

import torch

from diffbalance.errors import DiffbalanceError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DiffbalanceError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DiffbalanceError(f"device {name} requested but CUDA is not available", "use --device cpu or auto")
    return device


def fast_gpu_path(device: torch.device) -> bool:
    """bf16 autocast, channels_last and TF32 are used only on CUDA; the CPU path stays plain fp32."""
    return device.type == "cuda"


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
