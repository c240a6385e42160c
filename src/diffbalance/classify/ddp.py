"""Data-parallel classifier training: torch's DistributedDataParallel over the ranks of a torchrun job.

The recipe does not change with the number of processes P: every rank draws the same global batch (the seeded
permutation of the epoch, `config.batch_size` images), augments and mixes the whole of it with the same per-step
seeds (the training set already lives on every device, and augmentation is cheap next to the network), then keeps
its contiguous slice (`distributed.local_slice`) of images, labels and loss weights. DDP averages the P gradients,
so a step is the world-size-1 step up to the order of fp32 sums (losses.py's header for weighted losses).

Batch norm is the exception: each rank normalises its slice with the slice's statistics (standard DDP), unless
`sync_batchnorm` makes them the global batch's (CUDA only). DDP broadcasts rank 0's buffers before each forward,
so rank 0's running statistics are the run's; `broadcast_state` hands them to every rank when a stage ends.

Rank 0 alone writes checkpoints (the unwrapped module, so a checkpoint does not depend on P and resumes at any P).
`world` is the run's own: the job's `distributed.current()` under DDP, rank 0 of 1 when a rank trains alone.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from diffbalance.infra import distributed
from diffbalance.infra.distributed import Dist
from diffbalance.infra.errors import DiffbalanceError


def training_world(ddp: bool | None) -> Dist:
    """The run's world: the job's when `ddp` is not False and the job has several processes, else rank 0 of 1."""
    world = distributed.current()
    return world if ddp is not False and world.active else Dist()


def check_world(world: Dist, device: torch.device, batch_size: int, sync_batchnorm: bool) -> slice:
    """This rank's slice of every global batch, after the checks that fail alike on every rank (no collective)."""
    if world.active and sync_batchnorm and device.type != "cuda":
        raise DiffbalanceError(
            f"sync_batchnorm needs CUDA, but this {world.world_size}-process run trains on the {device.type}",
            "set sync_batchnorm: false (each rank then normalises its own slice), or train on GPUs",
        )
    return distributed.local_slice(batch_size, world, what="batch_size")


def wrap(model: nn.Module, device: torch.device, world: Dist, sync_batchnorm: bool) -> nn.Module:
    """`model` under DDP (its batch norm made synchronous when asked); `model` itself when training alone.
    The wrapper shares `model`'s parameters, so the optimiser and checkpoints keep using `model`."""
    if not world.active:
        return model
    if sync_batchnorm:  # check_world refused it off CUDA; converts in place for a model without a BN root
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrapped(step_model: nn.Module) -> nn.Module:
    """The module inside a torch.compile and/or DDP wrapper."""
    module = getattr(step_model, "_orig_mod", step_model)
    return module.module if isinstance(module, DistributedDataParallel) else module


@torch.no_grad()
def broadcast_state(world: Dist, *modules: nn.Module | None, buffers_only: bool = True) -> None:
    """Rank 0's buffers (and parameters, unless `buffers_only`) of each module on every rank."""
    if not world.active:
        return
    for module in modules:
        if module is None:
            continue
        tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
        for t in tensors:
            dist.broadcast(t.data, src=0)


def all_reduce_mean(world: Dist, value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over the run's ranks (alone: `value`)."""
    if not world.active:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world.world_size
