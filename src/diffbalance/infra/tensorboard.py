"""Optional TensorBoard scalars (`--log-dir DIR`, `log_dir:` in a config): the training curves as event files.

Off (no log dir), nothing here imports tensorboard or writes a file. On, the `tensorboard` package must be
installed (`pip install 'diffbalance[tensorboard]'`), and only the main process (rank 0 under torchrun) writes.
The stages never hold a writer: they take a callback that receives their plain records — classify.train's one per
epoch, generate.cfg.train's one per few steps — and `Scalars.recorder` makes one:

    {"stage": "train", "epoch": 3, "loss": 0.41, "lr": 0.1, ...}   →  <prefix>/train/loss, <prefix>/train/lr, … at 3
    {"step": 500, "loss": 0.05, "lr": 1e-4}                         →  <prefix>/loss, <prefix>/lr at step 500

Every number of a record but its step becomes a scalar (None, strings and booleans are left out).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from diffbalance.infra.atomic import check_writable
from diffbalance.infra import distributed
from diffbalance.infra.errors import DiffbalanceError

INSTALL = "pip install 'diffbalance[tensorboard]'"
Record = dict[str, Any]
OnRecord = Callable[[Record], None]  # what a training loop calls with each record of its curve


def summary_writer_class() -> type:
    """torch's SummaryWriter; a one-line error when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DiffbalanceError("--log-dir / log_dir needs the tensorboard package, which is not installed",
                               f"{INSTALL}, or leave out the log dir") from None
    return SummaryWriter


class Scalars:
    """TensorBoard event files under `log_dir`, written by the main process; on other ranks every call is a no-op.
    Every rank checks that tensorboard is installed, so all of them fail alike; the writer (and its file) is made at
    the first record, when the process has joined its job (rank 0 is known only then)."""

    def __init__(self, log_dir: str | Path):
        self._writer_class, self._log_dir = summary_writer_class(), Path(log_dir)
        self._writer = None

    def recorder(self, prefix: str, step_key: str = "epoch") -> OnRecord:
        """A callback that writes each record it gets as scalars under `prefix` (and the record's stage)."""
        return lambda record: self.write(prefix, [record], step_key)

    def write(self, prefix: str, records: Iterable[Record], step_key: str = "epoch") -> None:
        """Records already made (a finished run's history) as scalars under `prefix`."""
        if not distributed.current().is_main:
            return
        if self._writer is None:
            self._writer = self._writer_class(str(self._log_dir))
        for record in records:
            group = f"{prefix}/{record['stage']}" if "stage" in record else prefix
            for key, value in record.items():
                if key not in (step_key, "stage") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{group}/{key}", value, int(record[step_key]))
        self._writer.flush()  # once per record batch (an epoch, a checkpoint): TensorBoard shows it right away

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


@contextlib.contextmanager
def scalar_log(log_dir: str | Path | None) -> Iterator[Scalars | None]:
    """`Scalars` writing to `log_dir` for the duration of the block, or None when `log_dir` is None (off)."""
    if log_dir is None:
        yield None
        return
    check_writable(Path(log_dir), "log folder", "--log-dir")  # before any work, not after it
    scalars = Scalars(log_dir)
    try:
        yield scalars
    finally:
        scalars.close()
