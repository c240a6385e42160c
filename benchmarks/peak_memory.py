"""Peak memory of a benchmark job, read inside the job (standard library only: each job is a fresh process that
must pay for its own tool's imports only)."""

from __future__ import annotations

import resource
import sys


def rss_gb() -> float:
    """This process's peak resident set so far (GiB): VmHWM from /proc/self/status on Linux. Not getrusage's
    ru_maxrss, which a spawned job inherits from its parent (the kernel carries the pre-exec high-water mark over
    exec: every job would start at this script's own peak)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20  # kB
    except (OSError, StopIteration):  # not Linux: ru_maxrss (bytes on macOS, KiB elsewhere)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)
