"""Report figures (matplotlib, Agg backend): per-class F1 bars, confusion matrices, fill-image grids, sweeps and
training curves."""

from __future__ import annotations

import math
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


def classifier_training_figure(runs: list[dict], methods: list[str], classifiers: list[str], path: Path) -> None:
    """One panel per (classifier, method) with a training curve: per seed, the epoch's mean loss (solid, left axis)
    and validation accuracy (dashed, right axis, when measured) against the epoch, head re-training epochs after
    the training epochs (past the dotted line)."""
    panels = [(clf, m, [r for r in runs if r["method"] == m and r["classifier"] == clf and r.get("history")])
              for clf in classifiers for m in methods]
    panels = [p for p in panels if p[2]]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, (clf, m, members) in zip(axes.flat, panels):
        acc_ax = None
        for k, run in enumerate(sorted(members, key=lambda r: r["seed"])):
            colour = f"C{k % 10}"
            x, loss, acc = _epoch_axis(run["history"])
            ax.plot(x, loss, color=colour, lw=1.2, label=f"seed {run['seed']}")
            if any(a is not None for a in acc):
                acc_ax = ax.twinx() if acc_ax is None else acc_ax
                acc_ax.plot(x, [None if a is None else 100 * a for a in acc], color=colour, lw=1.0, ls="--")
            head_from = next((xi for xi, r in zip(x, run["history"]) if r["stage"] == "head"), None)
            if head_from is not None and k == 0:
                ax.axvline(head_from - 0.5, color="grey", ls=":", lw=0.8)
        ax.set_title(f"{m} — {clf}", fontsize=8)
        ax.set_xlabel("epoch (head re-training after the dotted line)" if _has_head(members) else "epoch", fontsize=7)
        ax.set_ylabel("loss (solid)", fontsize=7)
        ax.tick_params(labelsize=6)
        if acc_ax is not None:
            acc_ax.set_ylabel("validation accuracy % (dashed)", fontsize=7)
            acc_ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Classifier training", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _epoch_axis(history: list[dict]) -> tuple[list[int], list[float], list[float | None]]:
    """(x, loss, validation accuracy) of a run's records: stage-1 epochs 1..E, then head epochs E+1..E+H."""
    train_epochs = max((r["epoch"] for r in history if r["stage"] == "train"), default=0)
    x = [r["epoch"] + (train_epochs if r["stage"] == "head" else 0) for r in history]
    return x, [r["loss"] for r in history], [r.get("validation_accuracy") for r in history]


def _has_head(runs: list[dict]) -> bool:
    return any(r["stage"] == "head" for run in runs for r in run["history"])


def generator_training_figure(curves: dict[str, list[dict]], path: Path) -> None:
    """The loss of each generator (mean over the steps since the previous record) against the training step."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for name, history in curves.items():
        ax.plot([r["step"] for r in history], [r["loss"] for r in history], lw=1.2, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean since the previous point)")
    ax.set_title("Generator training", fontsize=10)
    ax.legend(fontsize=6, frameon=False)
    _save(fig, path)
