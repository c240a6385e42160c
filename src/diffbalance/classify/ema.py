"""Exponential moving average of a classifier's weights (Polyak & Juditsky 1992; `ema_decay` of TrainConfig).

After every optimiser step, for each parameter θ and its average θ̄ (initialised to the initial weights):

    θ̄ ← β θ̄ + (1 − β) θ      (β = ema_decay)

Buffers (batch norm's running statistics and counters) are not averaged but copied from the model, so the average
is evaluated with the statistics the trained model has. One fused `_foreach_lerp_` per step on the device: no sync.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_copy(model: nn.Module) -> nn.Module:
    """The average's module: a copy of `model` (same device and memory format) that no optimiser touches."""
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    return ema.eval()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """θ̄ ← decay θ̄ + (1 − decay) θ for every parameter; buffers copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    buffers = list(ema.buffers())
    if buffers:  # a model without batch norm has none
        torch._foreach_copy_(buffers, list(model.buffers()))
