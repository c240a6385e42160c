"""Run a function in N gloo processes on the CPU, as torchrun would start them (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT in each process's environment; the first entry_device joins the group)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from queue import Empty
from pathlib import Path

import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_gloo(rank: int, world_size: int, port: int):
    """In a started process: the environment torchrun would give rank `rank`, one torch thread (the ranks share the
    cores), then entry_device("cpu") joins the gloo group; returns the device."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1", DIFFBALANCE_DIST_TIMEOUT="60")
    import torch

    from diffbalance.infra.device import entry_device

    torch.set_num_threads(1)
    return entry_device("cpu")


def _child(rank: int, world_size: int, port: int, fn, args, queue) -> None:
    from diffbalance.infra import distributed

    join_gloo(rank, world_size, port)
    ok = False
    try:
        queue.put((rank, fn(rank, *args)))
        ok = True
    except BaseException as err:  # noqa: BLE001 — the parent gets the error's type and text
        queue.put((rank, ("raised", type(err).__name__, str(err))))
    finally:
        distributed.shutdown(ok)


def run_ranks(fn, world_size: int, *args, timeout: float = 120) -> list:
    """fn(rank, *args) in `world_size` spawned processes; returns their results in rank order (an exception comes
    back as ("raised", type name, text), a process that died without a word as ("died", exit code)). `fn` must be
    a module-level function of a test module."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_child, args=(r, world_size, port, fn, args, queue)) for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    while len(results) < world_size and time.monotonic() < deadline:
        try:
            rank, value = queue.get(timeout=0.2)
            results[rank] = value
        except Empty:
            if all(not p.is_alive() for p in procs) and queue.empty():
                break
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
    return [results.get(r, ("died", procs[r].exitcode)) for r in range(world_size)]


def torchrun(nproc: int, *args: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node N -m diffbalance ARGS` (standalone rendezvous), captured."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "diffbalance", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)
