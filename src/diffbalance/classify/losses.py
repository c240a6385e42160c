"""Training losses: cross-entropy and the balanced-softmax / logit-adjusted loss, both for hard or soft targets.

Cross-entropy with target distribution q (one-hot, smoothed, or Mixup/CutMix-mixed):
    L(z, q) = −Σ_k q_k log softmax(z)_k,   label smoothing ε: q ← (1 − ε) q + ε / K.

Balanced softmax (Ren et al. 2020, "Balanced Meta-Softmax") = the logit-adjusted loss of Menon et al. (2021) at τ = 1:
    L_bal(z, q) = L(z + τ · log π, q),   π_k = n_k / Σ_j n_j  (the training-set class prior).
The shift is applied during training only; at test time the plain logits z are used (argmax z), which turns the
prior-weighted training posterior into a balanced one. A class with no training image would get log 0 = −∞;
its count is raised to 1 so the loss stays finite.

Per-sample weights w (DiffuLT's weighted cross-entropy, Shao et al. 2024: generated images weigh w, real ones 1):
    L = Σ_i w_i ℓ_i / Σ_i w_i,
a weighted mean, so the loss scale (and so the effective lr) does not depend on how many generated images a batch
holds; a sample with w_i = 0 gets no gradient. Without weights the loss is F.cross_entropy's plain mean, the same
op as before weights existed, so an unweighted run stays bit-identical.

Data-parallel training (classify.train with DDP) gives each of P ranks a slice of the global batch and averages
the P gradients. The plain mean needs nothing more (equal slices). The weighted mean passes the global batch's
weight total as `weight_total` = Σ_global w / P, so rank r's loss is Σ_{i∈r} w_i ℓ_i / (Σ_global w / P) and the
average of the P gradients is the gradient of Σ_global w ℓ / Σ_global w, the loss at world size 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

LossFn = Callable[..., torch.Tensor]  # loss(logits (N, K), targets (N,) or (N, K), weights (N,) | None, weight_total)


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
    weight_total: torch.Tensor | None = None,
) -> torch.Tensor:
    """CE of logits (N, K) against class indices (N,) or class probabilities (N, K): the mean over the batch, or
    the `weights`-weighted mean Σ w ℓ / Σ w when per-sample weights (N,) are given (Σ w: `weight_total` when
    given, see the module header)."""
    if targets.ndim == 2:
        targets = targets.to(logits.dtype)
    if weights is None:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    per_sample = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="none")  # (N,)
    return weighted_mean(per_sample, weights, weight_total)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """Σ w_i v_i / Σ w_i (or / `total`); a batch whose weights are all 0 gives 0 (no gradient) instead of 0 / 0."""
    weights = weights.to(values.dtype)
    total = weights.sum() if total is None else total.to(values.dtype)
    return (weights * values).sum() / total.clamp_min(torch.finfo(values.dtype).tiny)


def log_class_prior(class_counts: Sequence[int] | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """log π_k = log(n_k / Σ n_j) as float32 (K,); empty classes count as one image."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1)
    return (counts / counts.sum()).log().to(torch.float32).to(device)


def balanced_softmax_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    log_prior: torch.Tensor,
    label_smoothing: float = 0.0,
    tau: float = 1.0,
    weights: torch.Tensor | None = None,
    weight_total: torch.Tensor | None = None,
) -> torch.Tensor:
    """CE on z + τ log π (Ren et al. 2020 for τ = 1; Menon et al. 2021's logit-adjusted loss for any τ)."""
    adjusted = logits.float() + tau * log_prior.to(logits.device)  # (N, K); fp32 so bf16 logits keep the shift exact
    return cross_entropy(adjusted, targets, label_smoothing, weights, weight_total)


def _cross_entropy_loss(class_counts: Sequence[int], label_smoothing: float, device: torch.device) -> LossFn:
    return lambda logits, targets, weights=None, weight_total=None: cross_entropy(
        logits, targets, label_smoothing, weights, weight_total
    )


def _balanced_softmax_loss(class_counts: Sequence[int], label_smoothing: float, device: torch.device) -> LossFn:
    prior = log_class_prior(class_counts, device)
    return lambda logits, targets, weights=None, weight_total=None: balanced_softmax_loss(
        logits, targets, prior, label_smoothing, weights=weights, weight_total=weight_total
    )


# `TrainConfig.loss` name → its builder (class counts, label smoothing, device) → loss; the one list of the names
LOSSES: dict[str, Callable[[Sequence[int], float, torch.device], LossFn]] = {
    "ce": _cross_entropy_loss,
    "balanced_softmax": _balanced_softmax_loss,  # logits + log prior of the counts (Ren et al. 2020)
}
LossName = Literal[tuple(LOSSES)]  # type: ignore[valid-type]


def build_loss(kind: str, class_counts: Sequence[int], label_smoothing: float, device: torch.device) -> LossFn:
    """The training loss named by `TrainConfig.loss`, as `loss(logits, targets, weights=None, weight_total=None)`;
    `class_counts` are balanced_softmax's prior (all training images, or the real ones only: `TrainConfig.prior`)."""
    return LOSSES[kind](class_counts, label_smoothing, device)  # TrainConfig has checked the name
