"""Several processes, one job: PyTorch's own distributed stack, nothing home-made.

`torchrun` (and `accelerate launch`, which sets the same variables) starts one process per GPU (or per CPU
worker) with RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in the environment. The entry points
join the process group explicitly (`join`, through `infra.device.entry_device`): NCCL when the rank runs on CUDA
(`cuda:LOCAL_RANK`), gloo on the CPU. Without a launcher nothing changes: `current()` is rank 0 of 1 and every
helper below is a no-op.

The rules every stage follows:
- rank 0 alone writes shared files (`is_main`); the others wait at a `barrier`;
- work that rank 0 does alone (`on_main`) hands its result, or its one-line error, to every rank;
- work that every rank does (`agree`) ends with every rank knowing whether any rank failed, so all of them
  raise the same one-line error instead of waiting for a peer that is gone;
- image i of class c comes from its own seed whatever rank makes it (`shard` only decides who).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from diffbalance.infra.atomic import output_lock, remove_stale_temps
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.progress import console

T = TypeVar("T")
TIMEOUT_ENV = "DIFFBALANCE_DIST_TIMEOUT"  # seconds a rank waits at a collective (rank 0 working alone included)
DEFAULT_TIMEOUT_S = 6 * 3600


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job: rank `rank` of `world_size`, GPU `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are peers to wait for (a torchrun job of one process has none)."""
        return self.world_size > 1


class PeerFailed(DiffbalanceError):
    """Another rank (`rank`) failed: its line, raised on every rank that did not fail itself (the CLI prints it on
    rank 0 only, so it is not repeated N times)."""

    def __init__(self, problem: str, fix: str | None, rank: int):
        super().__init__(problem, fix)
        self.rank = rank


class RankError(DiffbalanceError):
    """A problem of this rank alone (its GPU, its connection to the job): every rank that has it says it. Any other
    bad input met before the job is joined is met by every rank alike, so only rank 0 says it."""


def launched() -> bool:
    """Whether this process was started by torchrun / accelerate launch (or any launcher setting RANK)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def current() -> Dist:
    """This process's place in the job (rank 0 of 1 when there is no process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def join(device: torch.device) -> torch.device:
    """Join the process group when launched (once; later calls return at once) and make `device`, a resolved device
    (infra.device.resolve_device: under a launcher a CUDA device is cuda:LOCAL_RANK), the rank's current one. The
    entry points call it through `entry_device`: joining is an explicit step of an entry, not of resolving."""
    if not launched():
        return device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # (a caller may have joined it already)
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=timeout,
                                    **({"device_id": device} if device.type == "cuda" else {}))
        except (RuntimeError, ValueError) as err:
            raise RankError(
                f"could not join the {backend} process group ({str(err).splitlines()[0][:160]})",
                "check MASTER_ADDR/MASTER_PORT (or torchrun's --rdzv-endpoint) and that every node can reach it",
            ) from None
    console.quiet = dist.get_rank() != 0  # one voice: rank 0 prints progress bars and messages
    return device


def shutdown(ok: bool = True) -> None:
    """Leave the process group (at the end of a launched command). After work that ended together (`ok`), every
    rank waits for the others first, so that none tears its connections down while a peer still uses them; DDP
    wrappers left in reference cycles are freed while the group still exists. After an error, just leave."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    if ok and current().active:
        try:
            dist.barrier()
        except (RuntimeError, dist.DistError):  # a peer is gone already: nothing left to wait for
            pass
    dist.destroy_process_group()


def barrier() -> None:
    if current().active:
        dist.barrier()


def gather(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank."""
    d = current()
    if not d.active:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def shard(items: Sequence[T], d: Dist | None = None) -> list[T]:
    """This rank's share of `items`: every world_size-th item from position `rank` (balanced, any length)."""
    d = d or current()
    return list(items[d.rank :: d.world_size])


def local_slice(n: int, d: Dist | None = None, what: str = "batch") -> slice:
    """This rank's contiguous slice of a global batch of `n` (DDP: each rank takes its part of every global
    batch, so the batch and the data order do not depend on the world size). `n` must divide evenly."""
    d = d or current()
    if n % d.world_size:
        raise DiffbalanceError(
            f"the global {what} of {n} does not split evenly over {d.world_size} processes",
            f"use a {what} that is a multiple of {d.world_size}, or another process count",
        )
    per = n // d.world_size
    return slice(d.rank * per, (d.rank + 1) * per)


def agree(fn: Callable[[], T], d: Dist | None = None) -> T:
    """Run `fn` on every rank of `d` (default: the job); if it raised on any rank, every rank raises the first
    failing rank's one-line error (the failing rank re-raises its own exception, so a bug keeps its traceback
    there). For `d` of one process (a rank working alone inside a job) it is just `fn`."""
    d = d or current()
    if not d.active:
        return fn()
    result, status, error = _attempt(fn, d)
    _raise_first(gather(status), d, error)
    return result  # type: ignore[return-value]


def on_main(fn: Callable[[], T], share: bool = True, d: Dist | None = None) -> T | None:
    """Rank 0 of `d` (default: the job) runs `fn` (e.g. writing a shared file) while the others wait; every rank
    gets its result (None on the others when `share` is False), or raises its one-line error."""
    d = d or current()
    if not d.active:
        return fn()
    result, status, error = _attempt(fn, d) if d.is_main else (None, None, None)
    box = [result if share else None, status]
    dist.broadcast_object_list(box, src=0)
    _raise_first([box[1]], d, error)
    return result if d.is_main else box[0]


def main_first(fn: Callable[[], T]) -> T:
    """Rank 0 runs `fn` first (filling a cache, checking inputs), then the others run it (finding what rank 0
    left). A failure on any rank reaches every rank as that rank's one-line error."""
    d = current()
    if not d.active:
        return fn()
    if d.is_main:
        result = on_main(fn, share=False)
        agree(lambda: None)  # the others' turn
        return result  # type: ignore[return-value]
    on_main(lambda: None, share=False)  # wait for rank 0 (and raise its error)
    return agree(fn)


@contextlib.contextmanager
def held_output(folder: Path) -> Iterator[Path]:
    """Write `folder` as one job: rank 0 takes its lock (a second job is refused at once) and removes what a killed
    run left half-written, while the others wait; rank 0 lets go only once every rank is done with the folder."""
    folder = Path(folder)
    with contextlib.ExitStack() as stack:
        def take() -> None:
            stack.enter_context(output_lock(folder))
            remove_stale_temps(folder)

        on_main(take, share=False)
        yield folder
        barrier()  # not on an error: the peers may be gone, and the lock dies with the process anyway


def _attempt(fn: Callable[[], T], d: Dist) -> tuple[T | None, tuple[str, str | None] | None, BaseException | None]:
    """(result, None, None), or (None, (problem, fix), the exception) when `fn` raised."""
    try:
        return fn(), None, None
    except PeerFailed as err:
        return None, (err.problem, err.fix), err
    except DiffbalanceError as err:
        return None, (f"rank {d.rank}: {err.problem}" if d.rank else err.problem, err.fix), err
    except Exception as err:  # noqa: BLE001 — a bug: the peers stop with its name, this rank re-raises it
        return None, (f"internal error on rank {d.rank} ({type(err).__name__}: {str(err)[:160]})",
                      "this is a bug in diffbalance; see that rank's log line"), err


def _raise_first(statuses: list, d: Dist, own: BaseException | None) -> None:
    for rank, status in enumerate(statuses):
        if status is None:
            continue
        if own is not None and rank == d.rank:
            if d.rank and isinstance(own, DiffbalanceError):
                own.said_by_rank0 = True  # rank 0 raises it as PeerFailed and prints it: the CLI says it once
            raise own
        problem, fix = status
        raise PeerFailed(problem, fix, rank) from None
