"""CPU threads for a machine that is doing other things too.

PyTorch's CPU kernels run on an OpenMP pool with one thread per core, and OpenMP threads spin while they wait
for work. When another process holds a core, a spinning pool fights it for the core and every parallel region
waits for its slowest thread: a 2-core laptop running one other CPU-bound job slowed the demo about 5×.
Two measures, taken when the CLI starts and only when other processes keep cores busy (alone, spinning is ~10 %
faster), both overridden by what the user set (OMP_NUM_THREADS, OMP_WAIT_POLICY, DIFFBALANCE_THREADS):
  - OpenMP is asked to sleep instead of spin while it waits (`passive_waiting`, before torch is imported);
  - the pool gets the cores this process may use less those other processes keep busy, at least 1
    (`choose_threads`, from the scheduler affinity and the 1-minute load average).
benchmarks/cpu_threads.py measures both against PyTorch's defaults, alone and beside a busy process.
"""

from __future__ import annotations

import os
import time

THREADS_ENV = "DIFFBALANCE_THREADS"


def passive_waiting() -> None:
    """When other processes keep cores busy, let idle OpenMP threads sleep (read by the OpenMP runtime when torch
    loads it: call before importing torch). Remembers the count for `configure_threads`."""
    global _BUSY
    _BUSY = busy_cores()
    if _BUSY > 0:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_BUSY: int | None = None  # busy cores seen by passive_waiting (the CLI's start), reused by configure_threads


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_threads(cores: int | None = None, busy: int | None = None) -> int:
    """Intra-op threads: DIFFBALANCE_THREADS or OMP_NUM_THREADS when set; else the usable cores less the ones the
    rest of the machine keeps busy (`busy_cores`), at least 1."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    return max(1, cores - max(0, min(cores - 1, busy)))


def busy_cores(samples: int = 5, interval: float = 0.05) -> int:
    """Cores other processes are using now: the median count of runnable tasks in /proc/loadavg over a few samples,
    less this process; without /proc, the 1-minute load average."""
    counts = []
    for k in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)  # "running/total": this reader runs too
        except (OSError, ValueError, IndexError):
            break
        if k + 1 < samples:
            time.sleep(interval)
    if counts:
        return sorted(counts)[len(counts) // 2]
    try:
        return int(os.getloadavg()[0] + 0.5)
    except OSError:
        return 0


def configure_threads() -> int:
    """Size torch's intra-op pool with `choose_threads`; returns the count."""
    import torch

    n = choose_threads(busy=_BUSY)
    torch.set_num_threads(n)
    return n
