"""How fast this machine trains the threads benchmark's workload, and what that makes of a measured run time.

A config may carry the wall time it took (`expected_time: {seconds, cpu_img_s}`: the seconds, and that machine's
img/s on the workload below, which `benchmarks/cpu_threads.py` also times). CPU runs are compute-bound, so on another
machine the time scales with the inverse of its speed: `expected_seconds` = seconds · cpu_img_s / this machine's img/s. The
speed here is measured in about a second by `classifier_img_s` on a small set, with the threads this process uses
(a busy machine measures slower, and so will the run be).

The workload: small_cnn trained on random 1×28×28 images, batch 128, one warm-up epoch then one timed epoch
(classify.train, the code path of every classifier run).
"""

from __future__ import annotations

import math

import time
from dataclasses import dataclass

import torch

from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.configs import Config

PROBE_IMAGES = 1024  # ~0.5 s per epoch at 2,000 img/s; benchmarks/cpu_threads.py times 2048


@dataclass(frozen=True)
class ExpectedTime(Config):
    seconds: float  # the wall time the config took, alone, on the CPU of the machine below
    cpu_img_s: float  # that machine's speed in img/s on the threads benchmark's workload (`classifier_img_s`, or
    # the small CNN's training speed inside the measured run)

    def validate(self) -> None:
        self.require(0 < self.seconds < math.inf, "seconds", "the measured wall time in seconds, > 0 and finite")
        self.require(0 < self.cpu_img_s < math.inf, "cpu_img_s", "the measuring machine's img/s, > 0 and finite")

    def expected(self, here_img_s: float) -> float:
        """Seconds on a machine measuring `here_img_s`."""
        return expected_seconds(self.seconds, self.cpu_img_s, here_img_s)


def expected_time_line(times: list[ExpectedTime], here_img_s: float) -> str:
    """One line for the start of a run (of one config, or of a study's profiles in turn): the wall time to expect
    here and where it comes from."""
    expected = sum(t.expected(here_img_s) for t in times)
    measured = "; ".join(f"{_minutes(t.seconds)} at {t.cpu_img_s:,.0f} img/s" for t in times)
    return (f"expected time: about {_minutes(expected)} on this machine ({here_img_s:,.0f} img/s in the threads "
            f"benchmark's workload; measured {measured})")


def classifier_img_s(images: int = PROBE_IMAGES, batch: int = 128) -> float:
    """Training images per second of small_cnn on the CPU, with this process's threads (one timed epoch)."""
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (images, 1, 28, 28), dtype=torch.uint8, generator=g),
                    torch.arange(images) % 10, tuple(str(c) for c in range(10)), "speed probe")
    cfg = TrainConfig(model="small_cnn", epochs=1, batch_size=batch, warmup_epochs=0)
    train_classifier(data, cfg, device="cpu", seed=0, progress=False)  # warm-up: allocator, oneDNN kernels
    start = time.perf_counter()
    train_classifier(data, cfg, device="cpu", seed=1, progress=False)
    return images / (time.perf_counter() - start)


def expected_seconds(seconds: float, measured_img_s: float, here_img_s: float) -> float:
    """A CPU run that took `seconds` on a machine measuring `measured_img_s`, on one measuring `here_img_s`."""
    return seconds * measured_img_s / here_img_s


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"
