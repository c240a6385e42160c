"""Class consistency of generated images: how often a reference classifier (trained by the caller on the balanced
real set) predicts the class an image was generated for. Serves every generative rebalancer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffbalance.data.imageset import ImageSet


def class_consistency(
    predict: Callable[[torch.Tensor], torch.Tensor], fills: ImageSet, batch_size: int = 1024
) -> dict:
    """Agreement (%) of predict(images) with the intended labels, per class and overall; JSON-able.

    predict: uint8 (B, C, H, W) → int64 (B,) predicted class indices.
    Classes with no generated images get `null` agreement.
    """
    predicted = torch.cat([
        torch.as_tensor(predict(fills.images[k : k + batch_size])).cpu().long().flatten()
        for k in range(0, len(fills), batch_size)
    ]) if len(fills) else torch.zeros(0, dtype=torch.long)
    agree = predicted == fills.labels
    per_class = {}
    for c, name in enumerate(fills.class_names):
        mask = fills.labels == c
        n = int(mask.sum())
        per_class[name] = {"images": n, "agreement_pct": round(100.0 * float(agree[mask].float().mean()), 2) if n else None}
    return {
        "images": len(fills),
        "agreement_pct": round(100.0 * float(agree.float().mean()), 2) if len(fills) else None,
        "per_class": per_class,
    }
