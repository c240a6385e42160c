"""Classification metrics of a test set, all computed by scikit-learn, returned as JSON-able Python values.

With C the confusion matrix (rows = true class, columns = predicted), over the K classes of `class_names`:
    accuracy            = Σ_k C_kk / Σ C
    recall_k            = C_kk / Σ_j C_kj,     precision_k = C_kk / Σ_i C_ik
    F1_k                = 2 · precision_k · recall_k / (precision_k + recall_k)      (the paper's eq. 12)
    macro_f1            = (1/K) Σ_k F1_k        (over all K classes; an undefined ratio counts as 0)
    balanced_accuracy   = mean of recall_k over the classes present in y_true

Many/medium/few-shot accuracy (Liu et al. 2019's split) is the mean recall of the classes in each group.
The usual absolute thresholds (many > 100, few < 20 training images) mean nothing for a 60…600-image demo set,
so groups are relative to the largest training class n_max:
    many:   n_k ≥ many_fraction · n_max   (default 2/3)
    few:    n_k ≤ few_fraction · n_max    (default 1/3)
    medium: in between.
A group with no class (or no test image of its classes) gives None.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

from diffbalance.infra.errors import DiffbalanceError


def classification_metrics(
    y_true,
    y_pred,
    class_names: Sequence[str],
    train_counts: Sequence[int] | None = None,
    *,
    many_fraction: float = 2 / 3,
    few_fraction: float = 1 / 3,
) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1, confusion matrix and, with
    `train_counts` (training images per class), many/medium/few-shot accuracy. Labels are class indices."""
    k = len(class_names)
    t, p = _as_labels(y_true, "y_true", k), _as_labels(y_pred, "y_pred", k)
    if len(t) != len(p):
        raise DiffbalanceError(f"{len(t)} true labels but {len(p)} predictions", "pass one prediction per test image")
    if len(t) == 0:
        raise DiffbalanceError("no test images to score", "pass a non-empty test set")
    labels = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=labels, average=None, zero_division=0.0
    )
    out = {
        "accuracy": float(accuracy_score(t, p)),
        "balanced_accuracy": _balanced_accuracy(t, p),
        "macro_f1": float(np.mean(f1)),
        "per_class_precision": [float(v) for v in precision],
        "per_class_recall": [float(v) for v in recall],
        "per_class_f1": [float(v) for v in f1],
        "confusion_matrix": confusion_matrix(t, p, labels=labels).tolist(),
        "class_names": list(class_names),
        "test_counts": [int(v) for v in support],
    }
    if train_counts is not None:
        out.update(shot_accuracies(recall, support, train_counts, many_fraction, few_fraction, class_names))
    return out


def shot_groups(
    train_counts: Sequence[int], many_fraction: float = 2 / 3, few_fraction: float = 1 / 3
) -> dict[str, list[int]]:
    """Class indices in the many/medium/few-shot groups, by training count relative to the largest class."""
    if not 0 <= few_fraction <= many_fraction <= 1:
        raise DiffbalanceError(
            f"shot fractions few={few_fraction}, many={many_fraction}", "need 0 ≤ few_fraction ≤ many_fraction ≤ 1"
        )
    counts = [int(c) for c in train_counts]
    top = max(counts)
    groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for i, n in enumerate(counts):
        if n >= many_fraction * top:
            groups["many"].append(i)
        elif n <= few_fraction * top:
            groups["few"].append(i)
        else:
            groups["medium"].append(i)
    return groups


def shot_accuracies(recall, support, train_counts, many_fraction, few_fraction, class_names) -> dict:
    """`many_shot_accuracy` … `few_shot_accuracy` (mean recall of the group's tested classes, or None)."""
    if len(train_counts) != len(class_names):
        raise DiffbalanceError(
            f"{len(train_counts)} training counts for {len(class_names)} classes", "pass one count per class"
        )
    out: dict = {}
    for name, members in shot_groups(train_counts, many_fraction, few_fraction).items():
        tested = [i for i in members if support[i] > 0]
        out[f"{name}_shot_accuracy"] = float(np.mean([recall[i] for i in tested])) if tested else None
        out[f"{name}_shot_classes"] = [class_names[i] for i in members]
    out["shot_thresholds"] = {"many_fraction": float(many_fraction), "few_fraction": float(few_fraction)}
    return out


def _balanced_accuracy(t: np.ndarray, p: np.ndarray) -> float:
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected on a partial test set
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(t, p))


def _as_labels(y, name: str, num_classes: int) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise DiffbalanceError(f"{name} must be a 1-D array of class indices, got {arr.dtype} {arr.shape}",
                               "pass integer labels (predict() output, ImageSet.labels)")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise DiffbalanceError(f"{name} holds labels outside [0, {num_classes})", "use the test set's class indices")
    return arr.astype(np.int64)
