"""Report figures (matplotlib, Agg backend): per-class F1 bars, confusion matrices, fill-image grids."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from diffbalance.infra.atomic import atomic_path  # noqa: E402
from diffbalance.data.imageset import ImageSet  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def per_class_f1_bars(runs: list[dict], methods: list[str], classifier: str, class_names: list[str],
                      path: Path) -> None:
    """Grouped bars: per class, one bar per method (mean over seeds), error bars = std over seeds."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(class_names) * max(1, len(methods)) / 3), 3.6))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(class_names))
    for k, m in enumerate(methods):
        f1s = [r["per_class_f1"] for r in runs if r["method"] == m and r["classifier"] == classifier]
        if not f1s:
            continue
        mean = [statistics.fmean(f[c] for f in f1s) for c in range(len(class_names))]
        std = [statistics.stdev(f[c] for f in f1s) if len(f1s) > 1 else 0 for c in range(len(class_names))]
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, mean, width, yerr=std, label=m)
    ax.set_xticks(x, class_names, rotation=35, ha="right")
    ax.set_ylabel("test F1")
    ax.set_ylim(0, 1)
    ax.set_title(f"Per-class F1 ({classifier}), mean over seeds")
    ax.legend(fontsize=7, ncols=min(6, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    _save(fig, path)


def confusion_matrix_figure(matrix: list[list[int]], class_names: list[str], title: str, path: Path) -> None:
    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if norm[i, j] >= 0.05:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=5,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def fill_grid(fills: ImageSet, per_class: int, title: str, path: Path) -> None:
    """One row per class that received fill images: its first `per_class` images (by index)."""
    rows, names = [], []
    for c in range(fills.num_classes):
        imgs = fills.class_images(c)[:per_class]
        if len(imgs) == 0:
            continue
        pad = torch.zeros((per_class - len(imgs), *imgs.shape[1:]), dtype=torch.uint8)
        rows.append(torch.cat([imgs, pad]))
        names.append(fills.class_names[c])
    grid = make_grid(torch.cat(rows), nrow=per_class, padding=2, pad_value=255)  # (C, H, W)
    if grid.shape[0] == 1:
        grid = grid.repeat(3, 1, 1)
    fig, ax = plt.subplots(figsize=(per_class * 0.55 + 1.6, len(rows) * 0.55 + 0.6))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    cell = fills.images.shape[2] + 2
    ax.set_yticks([cell * (i + 0.5) for i in range(len(names))], names, fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def sweep_figure(points: list[dict], labels: list[str], chosen: str | None, path: Path) -> None:
    """One sweep: fidelity (precision) vs diversity (recall) of each point, coloured by validation accuracy and
    labelled; beside it, each point's validation accuracy (mean ± std over the quick classifier's seeds) in search
    order, the chosen point in red."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    acc = [100 * p["validation_accuracy"] for p in points]
    pr = [(p.get("quality") or {}).get("precision_recall", {}) for p in points]
    if points and all(q.get("precision") is not None for q in pr):
        sc = ax1.scatter([q["recall"] for q in pr], [q["precision"] for q in pr], c=acc, cmap="viridis", s=40)
        for label, q in zip(labels, pr):
            ax1.annotate(label, (q["recall"], q["precision"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax1.margins(0.2)  # room for the labels
        fig.colorbar(sc, ax=ax1, label="validation accuracy %")
        ax1.set_xlabel("recall (diversity)")
        ax1.set_ylabel("precision (fidelity)")
    else:
        ax1.text(0.5, 0.5, "no fid: section, so no precision/recall", ha="center", va="center")
    ax1.set_title("fidelity vs diversity of the fills", fontsize=9)
    std = [100 * (p.get("validation_accuracy_std") or 0) for p in points]
    colours = ["tab:red" if label == chosen else "tab:blue" for label in labels]
    ax2.bar(range(len(points)), acc, yerr=std, color=colours, capsize=2)
    ax2.set_xticks(range(len(points)), labels, rotation=60, ha="right", fontsize=6)
    if acc:
        ax2.set_ylim(min(a - s for a, s in zip(acc, std)) - 2, max(a + s for a, s in zip(acc, std)) + 1)
    ax2.set_ylabel("validation accuracy % (mean ± std over seeds)")
    ax2.set_title("the choice, in search order (red: chosen)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
