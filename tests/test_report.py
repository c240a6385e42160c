"""report.md from plain data (a hand-made results dict and config dict, tiny image sets), and report/ importing
nothing from the stages that feed it."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.report.write import changed, write_report

CLASSES = ["cat", "dog", "owl"]
RECIPE_DEFAULTS = {"model": "small_cnn", "epochs": 30, "lr": 0.1, "loss": "ce", "augment": {"flip": True, "pad": 4}}
REPORT_DIR = Path(__file__).resolve().parents[1] / "src" / "diffbalance" / "report"


def _run(method: str, seed: int, acc: float) -> dict:
    confusion = [[3, 1, 0], [0, 3, 1], [1, 0, 2]]
    return {
        "method": method, "rebalancer": method, "classifier": "small_cnn", "seed": seed,
        "accuracy": acc, "balanced_accuracy": acc - 0.05, "macro_f1": acc - 0.1, "per_class_f1": [0.9, 0.7, acc / 2],
        "metrics": {"confusion_matrix": confusion, "many_shot_accuracy": 0.9, "medium_shot_accuracy": None,
                    "few_shot_accuracy": acc / 2},
        "train_images": 60, "train_seconds": 1.5, "device": "cpu (2 threads)",
    }


def _quality(fid: float) -> dict:
    provenance = {"features": "random-conv-32d-seed0", "resize": "none", "weights_sha256": "ab" * 32,
                  "feature_dtype": "float32", "statistics_dtype": "float64", "device": "cpu (2 threads)"}
    return {
        "protocol_fid": {"fid": fid, "n_a": 90, "n_b": 90},
        "generated_fid": {"fid": 3 * fid, "n_a": 60, "n_b": 30},
        "per_class_fid": {"dog": {"fid": 2.5}, "owl": {"fid": None}},
        "precision_recall": {"precision": 0.8, "recall": 0.6},
        "kid": {"kid_mean": 0.0123, "kid_std": 0.001},
        **provenance,
    }


def _results() -> dict:
    runs = [_run(m, seed, acc + 0.02 * seed) for m, acc in (("none", 0.6), ("mixup", 0.7)) for seed in (0, 1)]
    agreement = {"agreement_pct": 75.0, "per_class": {"dog": {"agreement_pct": 80.0}, "owl": {"agreement_pct": 70.0}}}
    return {
        "dataset": {"name": "toy", "profile": "linear", "class_names": CLASSES, "train_counts": [30, 20, 10],
                    "images_to_add": [0, 10, 20], "test_count": 12, "test_counts": [4, 4, 4], "image_shape": [3, 8, 8]},
        "runs": runs,
        "versions": {"diffbalance": "0.0", "torch": "2.x"},
        "device": "cpu (2 threads)",
        "consistency": {"reference": {"test": {"agreement_pct": 91.0, "per_class": {"cat": {"agreement_pct": 95.0}}}},
                        "mixup": agreement},
        "quality": {"mixup": _quality(1.25)},
    }


def _config() -> dict:
    """Shaped like ExperimentConfig.to_dict(): `train` and each method's `train` are full recipes."""
    train = {**RECIPE_DEFAULTS, "epochs": 2, "augment": {"flip": True, "pad": 0}}
    return {
        "name": "tiny", "data": {"name": "toy"}, "imbalance": {"profile": "linear", "n_min": 10, "selection": "first"},
        "sampling_strategy": "auto",
        "methods": [{"name": "none", "rebalancer": "none", "params": {}, "train": dict(train)},
                    {"name": "mixup", "rebalancer": "mixup", "params": {"alpha": 0.4},
                     "train": {**train, "loss": "balanced_softmax"}}],
        "classifiers": ["small_cnn"], "train": train, "seeds": [0, 1], "fill_seed": 7, "device": "cpu",
        "consistency": True, "reference_train": train, "reference_images_per_class": None,
        "fid": {"features": "random"},
        "grid_images_per_class": 4,
    }


def _fills() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.tensor([1] * 10 + [2] * 20), tuple(CLASSES), "mixup fill")


def test_report_has_every_table_and_figure(tmp_path):
    imbalanced = ImageSet(torch.zeros(60, 3, 8, 8, dtype=torch.uint8), torch.tensor([0] * 30 + [1] * 20 + [2] * 10),
                          tuple(CLASSES))
    path = write_report(tmp_path, _results(), imbalanced, {"mixup": _fills()}, _config(),
                        train_defaults=RECIPE_DEFAULTS)
    text = path.read_text()
    for heading in ("# diffbalance report — tiny", "## Test accuracy (%)", "## Balanced accuracy (%)",
                    "## Macro-F1 (%)",
                    "## Per-class F1 — small_cnn", "### Many / medium / few-shot accuracy — small_cnn",
                    "## Confusion matrices", "## Fill images", "## Class consistency (%)",
                    "## Generation quality — FID", "### What it hides: the fill images alone",
                    "## Choices where the paper is silent", "## Every run"):
        assert heading in text, heading
    assert "| classifier | none | mixup |" in text and "| small_cnn | 61.00 ± 1.41 | 71.00 ± 1.41 |" in text
    assert "| 2 owl (10) |" in text and "| mixup | 1.250 | 90 vs 90 |" in text
    assert "classifier seeds [0, 1]; fill seed 7" in text and "`first`" in text
    for figure in ("per_class_f1_small_cnn.png", "confusion_none.png", "confusion_mixup.png", "fills_mixup.png"):
        assert (tmp_path / "figures" / figure).is_file() and f"figures/{figure}" in text


def test_recipe_lines_show_only_what_differs(tmp_path):
    imbalanced = ImageSet(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2]), tuple(CLASSES))
    text = write_report(tmp_path, _results(), imbalanced, {}, _config(), train_defaults=RECIPE_DEFAULTS).read_text()
    assert "- Classifier recipe: epochs=2, augment.pad=0\n" in text  # not the whole recipe
    assert "- `mixup`: rebalancer `mixup` with {'alpha': 0.4}; recipe overrides {'loss': 'balanced_softmax'}" in text
    assert "`none`: rebalancer" not in text  # no parameters, no overrides: no line
    assert "## Fill images" not in text
    whole = write_report(tmp_path, _results(), imbalanced, {}, _config()).read_text()  # no defaults given
    assert "- Classifier recipe: model=small_cnn, epochs=2, lr=0.1" in whole


def test_changed_flattens_nested_sections():
    recipe = {"lr": 0.05, "aug": {"flip": False, "pad": 4}, "new": 1}
    assert changed(recipe, {"lr": 0.1, "aug": {"flip": True, "pad": 4}}) == {"lr": 0.05, "aug.flip": False, "new": 1}
    assert changed(RECIPE_DEFAULTS, RECIPE_DEFAULTS) == {}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against diffbalance.report
                base = ".".join(["diffbalance", "report"][: 3 - node.level] + ([base] if base else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names if base == "diffbalance"}
    return names


def test_report_imports_nothing_above_it():
    """report/ is the last stage: it may use the image-set type and small shared helpers, never a stage's code."""
    allowed = ("diffbalance.infra.atomic", "diffbalance.infra.errors", "diffbalance.infra.renames",
               "diffbalance.data.imageset", "diffbalance.report")
    files = sorted(REPORT_DIR.glob("*.py"))
    assert files
    for path in files:
        ours = {n for n in _imports(path) if n == "diffbalance" or n.startswith("diffbalance.")}
        bad = {n for n in ours if not any(n == a or n.startswith(a + ".") for a in allowed)}
        assert not bad, f"{path.name} imports {sorted(bad)}"
