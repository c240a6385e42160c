"""Image sets named by a string — what `diffbalance fid` compares — and that comparison as one library call.

A spec is one of:
- an image folder (<class>/<images>): every image as it is (`load_image_folder` without resizing); an unreadable
  file stops the comparison unless on_corrupt is "skip" (FID over silently dropped images would mislead);
- a fill folder of a run (holds fill.json): the generated images alone;
- RUN_DIR@METHOD: a finished run's rebalanced training set (imbalanced real + that method's fills);
- NAME:SPLIT[:PROFILE=N]: a registered data source (`data.sources.available_sources()`), optionally cut by a
  profile (linear=n_min, exponential=ratio, step=ratio), e.g. cifar10:train, cifar10:train:linear=500.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffbalance.infra import distributed
from diffbalance.data.image_folder import check_read_options, load_image_folder
from diffbalance.data.imageset import ImageSet
from diffbalance.data.sources import available_sources
from diffbalance.infra.device import DeviceLike, entry_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.evaluate.fid.protocol import FidConfig, extractor_kind, fid
from diffbalance.imbalance.specs import named_dataset
from diffbalance.rebalance.store import load_fill

def load_image_set(spec: str, on_corrupt: str = "error", columns: dict | None = None) -> ImageSet:
    """The ImageSet a spec names (see the module docstring); a one-line error for anything else.
    on_corrupt ("error" or "skip") is what an unreadable file in an image folder does; `columns` (image_column,
    label_column) name an hf: dataset's columns."""
    path = Path(spec).expanduser()
    if columns and not (":" in spec and not path.exists()):
        raise DiffbalanceError(f"{', '.join(columns)} name columns of a Hugging Face dataset; {spec} is not one",
                               "drop --image-column / --label-column, or pass hf:PATH")
    if path.is_dir() and (path / "fill.json").is_file():
        return load_fill(path, json.loads((path / "fill.json").read_text())["class_names"])
    if path.is_dir():
        # not data.sources' folder loader: FID needs every image as it is
        return load_image_folder(path, on_corrupt=on_corrupt, mixed_sizes="error")
    if "@" in spec and Path(spec.rsplit("@", 1)[0]).is_dir():
        from diffbalance.experiment.stage import load_rebalanced  # the run stack is heavy: loaded on use

        run_dir, method = spec.rsplit("@", 1)
        return load_rebalanced(Path(run_dir), method)
    if ":" in spec and not path.exists():
        return named_dataset(spec, **(columns or {}))
    raise DiffbalanceError(
        f"{spec} is neither an image folder, RUN_DIR@METHOD nor NAME:SPLIT",
        "pass a folder with one subfolder per class, a fill folder, runs/x@cfg, or NAME:SPLIT with NAME one of "
        f"{', '.join(available_sources())}, e.g. cifar10:test",
    )


def compare_image_sets(a_spec: str, b_spec: str, cfg: FidConfig = FidConfig(), device: DeviceLike = "auto",
                       domain_classifier: Path | None = None, on_corrupt: str = "error",
                       columns: dict | None = None) -> dict:
    """FID (eq. 11) between the sets two specs name, with how it was measured and the config (`diffbalance fid`).

    Domain features (a kind that `needs_classifier`, e.g. "domain") come from a classifier saved by `diffbalance run`
    (RUN/reference-classifier), loaded onto `device`. on_corrupt: what an unreadable file in a folder spec does,
    "error" (the default: FID over silently dropped images would mislead) or "skip" (the result counts them)."""
    check_read_options(None, None, on_corrupt)
    device = entry_device(device)
    domain_model = None
    if extractor_kind(cfg.features).get("needs_classifier", False):
        if domain_classifier is None:
            raise DiffbalanceError(f"--features {cfg.features} needs the classifier whose features it uses",
                                   "pass --domain-classifier RUN/reference-classifier (saved by `diffbalance run`)")
        from diffbalance.classify.train import TrainedClassifier

        domain_model = TrainedClassifier.load(Path(domain_classifier), device)
    # rank 0 first under torchrun (it fills the data cache); every rank then embeds its share of each set
    set_a, set_b = distributed.main_first(lambda: (load_image_set(a_spec, on_corrupt, columns),
                                                    load_image_set(b_spec, on_corrupt, columns)))
    skipped = {"skipped_a": set_a.meta.get("unreadable_count", 0), "skipped_b": set_b.meta.get("unreadable_count", 0)}
    return {"a": a_spec, "b": b_spec, **fid(set_a, set_b, cfg, device, domain_model=domain_model),
            "on_corrupt": on_corrupt, **skipped, "config": cfg.to_dict()}
