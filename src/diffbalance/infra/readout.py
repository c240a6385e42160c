"""A training loss shown on the progress bar without stalling the GPU.

`float(loss)` waits for every queued kernel: once per step it would serialise the host and the GPU. Instead the
loss stays on the device; now and then `send` queues a non-blocking copy of it into pinned host memory, and
`fields` shows the newest value that has landed (on the CPU the copy is immediate). A copy still on its way is
not overwritten: that `send` is skipped, so the bar lags by at most one report.
"""

from __future__ import annotations

import torch


class AsyncScalar:
    """The newest landed value of a 0-dim device tensor, for display."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.host = torch.zeros((), pin_memory=self.cuda)
        self.landed: torch.cuda.Event | None = None  # the event of the copy on its way, if any
        self.value: float | None = None

    def send(self, value: torch.Tensor) -> None:
        """Queue a copy of `value` (0-dim, on the device) to the host, unless the previous one is still on its way."""
        if self.landed is not None and not self._land():
            return
        self.host.copy_(value.detach().float(), non_blocking=self.cuda)
        if self.cuda:
            self.landed = torch.cuda.Event()
            self.landed.record()
        else:
            self.value = float(self.host)

    def fields(self) -> dict[str, float]:
        """{"loss": the newest landed value}, or {} before the first one."""
        if self.landed is not None:
            self._land()
        return {} if self.value is None else {"loss": self.value}

    def _land(self) -> bool:
        """Whether the queued copy has landed (then its value is taken)."""
        if not self.landed.query():
            return False
        self.value, self.landed = float(self.host), None
        return True
