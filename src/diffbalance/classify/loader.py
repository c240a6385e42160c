"""Training batches of a set too large for memory (`data.store.StoredImages`): read by DataLoader worker processes,
ahead of the step that needs them.

The in-memory path moves the whole set to the device once and indexes it there (fastest for sets that fit). A
stored set instead becomes `StreamedImages`: `images[idx]` reads those rows and moves them to the device, so head
re-training, feature fills and prediction work unchanged; and each epoch's main loop takes its batches from
`epoch_batches`, a `torch.utils.data.DataLoader` whose batch sampler is the run's own seeded epoch order, so the
batches — and every weight — are the same at any number of workers (0 reads in the training process). Workers
read raw rows (no decoding); augmentation stays in the step, on the device, as for in-memory sets. Memory is
bounded by batch size × prefetched batches × image size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from diffbalance.data.store import StoredImages

WORKERS_ENV = "DIFFBALANCE_LOADER_WORKERS"
PREFETCH = 4  # batches each worker reads ahead


class StreamedImages:
    """A stored set as a run's images: `len`, `shape`, and `images[idx]` → those images on `device`."""

    def __init__(self, stored: StoredImages, device: torch.device):
        self.stored, self.device = stored, device
        self.shape, self.dtype = stored.shape, stored.dtype

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, idx) -> torch.Tensor:
        return self.stored[idx].to(self.device, non_blocking=True)


class _Rows(Dataset):
    """Rows of a stored set, fetched a batch at a time (`__getitems__`: one read per run of consecutive rows)."""

    def __init__(self, stored: StoredImages):
        self.stored = stored

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.stored[i]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.stored[indices]


class _EpochBatches(Sampler):
    """The run's batches for one epoch: order[i·B : (i+1)·B] for every full batch, or its `rows` (a rank's share)."""

    def __init__(self, order: torch.Tensor, batch_size: int, steps: int, rows: slice = slice(None)):
        self.order, self.batch_size, self.steps, self.rows = order.cpu(), batch_size, steps, rows

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.steps):
            yield self.order[i * self.batch_size:(i + 1) * self.batch_size][self.rows].tolist()


def _whole(batch: torch.Tensor) -> torch.Tensor:
    return batch  # `__getitems__` already gives the batch as one tensor


def loader_workers(workers: int | None = None) -> int:
    """Worker processes: `workers`, else $DIFFBALANCE_LOADER_WORKERS, else one fewer than the CPU cores (at most 4)."""
    if workers is not None:
        return workers
    if os.environ.get(WORKERS_ENV, "").strip():
        return int(os.environ[WORKERS_ENV])
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def epoch_batches(images: StreamedImages, order: torch.Tensor, batch_size: int, steps: int,
                  workers: int | None = None, rows: slice = slice(None)) -> Iterator[torch.Tensor]:
    """Each step's batch (B, C, H, W) uint8 on the device — or its `rows`, a rank's share under DDP — in the order
    `order` gives, read ahead by workers."""
    n = loader_workers(workers)
    loader = DataLoader(_Rows(images.stored), batch_sampler=_EpochBatches(order, batch_size, steps, rows),
                        num_workers=n, collate_fn=_whole, pin_memory=images.device.type == "cuda",
                        prefetch_factor=PREFETCH if n else None)
    for batch in loader:
        yield batch.to(images.device, non_blocking=True)
