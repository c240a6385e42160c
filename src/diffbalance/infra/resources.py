"""Refuse up front what the machine cannot hold: a job's memory need is estimated before anything is allocated."""

from __future__ import annotations

import os

from diffbalance.infra.errors import DiffbalanceError

GIB = 1024**3


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); else the physical memory size."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(needed_bytes: float, what: str, fix: str) -> None:
    """A one-line error when `what` needs more than the memory available now (estimate in the message)."""
    have = available_memory_bytes()
    if needed_bytes > have:
        raise DiffbalanceError(f"{what} needs about {_size(needed_bytes)} of memory, {_size(have)} is available", fix)


def image_bytes(count: float, channels: int, height: int, width: int) -> float:
    """Bytes of `count` uint8 images held in memory."""
    return float(count) * channels * height * width


def _size(n: float) -> str:
    return f"{n / GIB:.3g} GiB" if n >= 0.1 * GIB else f"{n / 1024**2:.3g} MiB"
