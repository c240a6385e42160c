"""Learning rate as a pure function of the 0-based step s, with T steps in all and W warmup steps (`lr_factor`):

    cosine:   lr_s = lr · (s + 1) / W                              for s < W (linear warmup)
              lr_s = lr · ½ (1 + cos(π (s − W) / (T − W)))         after (Loshchilov & Hutter 2017, no restarts)
    onecycle: torch's OneCycleLR (Smith & Topin 2019) with cos annealing and fixed momentum: from lr/25 up to lr
              over the first W steps, then down to lr/(25·10⁴); W = warmup_epochs, or 30 % of T when 0.

The peak lr itself follows the linear scaling rule (Goyal et al. 2017, "Accurate, large minibatch SGD", §2.1:
"when the minibatch size is multiplied by k, multiply the learning rate by k") when `lr_reference_batch` is set:

    lr_peak = lr · B / B_ref     (B: images per optimiser step, B_ref: lr_reference_batch; B_ref = 0: lr_peak = lr)

Both training stages (classify.train, classify.head_retrain) read their lr from here.
"""

from __future__ import annotations

import math
from functools import partial

import torch


def scaled_lr(lr: float, batch_size: int, reference_batch: int) -> float:
    """The peak lr for `batch_size` images per step when `lr` is given for `reference_batch` (0: `lr` as given)."""
    return lr * batch_size / reference_batch if reference_batch else lr


def lr_factor(step: int, *, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak lr at 0-based `step` (see the module header)."""
    if schedule == "cosine":
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    # onecycle, as torch.optim.lr_scheduler.OneCycleLR(anneal_strategy="cos", three_phase=False)
    initial, final = 1 / 25, 1 / 25 / 1e4
    peak_step = (warmup_steps if warmup_steps > 0 else 0.3 * total_steps) - 1
    if step <= peak_step:
        return _cos_ramp(initial, 1.0, step / peak_step if peak_step > 0 else 1.0)
    return _cos_ramp(1.0, final, (step - peak_step) / max(1e-12, total_steps - 1 - peak_step))


def _cos_ramp(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * min(pct, 1.0)) + 1)


def lr_scheduler(
    optimizer: torch.optim.Optimizer, *, schedule: str, warmup_steps: int, total_steps: int,
    frozen_steps: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR on `lr_factor`; a `partial` (not a lambda) so its state_dict is plain JSON. With
    `frozen_steps` (fine-tuning head-then-full) every param group but the last (the head's) has lr 0 for that many
    steps and then follows the schedule."""
    factor = partial(lr_factor, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps)
    if frozen_steps <= 0 or len(optimizer.param_groups) == 1:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    held = partial(_after, frozen_steps=frozen_steps, factor=factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [held] * (len(optimizer.param_groups) - 1) + [factor])


def _after(step: int, *, frozen_steps: int, factor) -> float:
    """0 for the first `frozen_steps` steps, then `factor(step)`."""
    return 0.0 if step < frozen_steps else factor(step)
