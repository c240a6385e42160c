"""What every stage of a run shares: the checked inputs (`prepare_stage`) and the data they describe."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from diffbalance.infra import distributed
from diffbalance.infra.atomic import check_writable
from diffbalance.classify.train import TrainedClassifier
from diffbalance.data.imageset import ImageSet
from diffbalance.data.sources import load_train_test
from diffbalance.infra.device import entry_device
from diffbalance.evaluate.fid.embedder import Embedder
from diffbalance.experiment.config import ExperimentConfig, MethodConfig
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import inside
from diffbalance.imbalance.subset import apply_profile
from diffbalance.imbalance.targets import generation_counts
from diffbalance.imbalance.validation import Fold, selection_folds, split_validation
from diffbalance.rebalance.base import Rebalancer
from diffbalance.rebalance.registry import build_rebalancer
from diffbalance.rebalance.store import load_fill
from diffbalance.infra.resources import check_memory, image_bytes
from diffbalance.infra.seeding import derive_seed


@dataclass
class Stage:
    """What the stages share: the resolved data and where things go."""

    config: ExperimentConfig
    out_dir: Path
    device: torch.device
    train_full: ImageSet  # the original (balanced) training set
    test: ImageSet
    imbalanced: ImageSet  # the imbalanced training images every method starts from (validation part removed)
    validation: ImageSet | None  # real images held out for every choice; None without a held-out split
    images_to_add: list[int]  # per class, what sampling_strategy asks for (the methods that add images add these)
    progress: bool
    reference: TrainedClassifier | None = None  # trained on first use, shared by consistency and domain FID
    embedder: Embedder | None = None  # the FID feature network and its memo, made on first use (quality.run_embedder)
    folds: list[Fold] | None = None  # what choices are scored on (imbalance.validation.selection_folds); [] = none

    @property
    def selects(self) -> bool:
        """Whether choices can be made (a validation section: a held-out split or cross-validation folds)."""
        return bool(self.folds)


def prepare_stage(config: ExperimentConfig, out_dir: Path, progress: bool = True) -> Stage:
    """Everything checked before anything is written: the device (resolved once for the whole run), the output
    folder, the data and profile, the target, every method's files and model ids, and the memory the run needs.
    The config's sections and every method's parameters were checked when it was read."""
    device = entry_device(config.device)  # under torchrun: joins the job, this rank's device

    def checked() -> Stage:  # rank 0 first (it fills the data cache), then the others
        checked_out = check_run_folder(Path(out_dir), config)
        train, test, imbalanced, validation = load_imbalanced(config)
        images_to_add = generation_counts(imbalanced.counts(), config.sampling_strategy, imbalanced.class_names)
        for m in config.methods:
            reb = method_rebalancer(config, m, device)
            reb.check()
            reb.check_data(imbalanced)
        c, h, w = imbalanced.images.shape[1:]
        check_memory(image_bytes(len(train) + len(test) + len(imbalanced) + 2 * sum(images_to_add), c, h, w),
                     f"this run ({sum(images_to_add)} fill images per method of {c}×{h}×{w})",
                     "lower sampling_strategy (fewer fill images), or use smaller images")
        folds = selection_folds(imbalanced, validation, config.validation)  # K-fold: every class in every fold
        return Stage(config, checked_out, device, train, test, imbalanced, validation, images_to_add, progress,
                     folds=folds)

    return distributed.main_first(checked)


def check_run_folder(out_dir: Path, config: ExperimentConfig) -> Path:
    """`out_dir` can hold this run: writable, not a fill folder, and every folder the run makes stays inside it
    (no method, run or sweep folder is a symbolic link out of it)."""
    check_writable(out_dir)
    if (out_dir / "fill.json").is_file() or (out_dir / "manifest.jsonl").is_file():
        raise DiffbalanceError(f"{out_dir} is a fill folder (written by `diffbalance rebalance`), not a run folder",
                               "give `diffbalance run` a new or an earlier run's --out folder")
    for m in config.methods:
        inside(out_dir / "fills", m.name, "method")
        for clf in config.classifier_names():
            for seed in config.seeds:
                inside(out_dir / "checkpoints", run_name(m.name, clf, seed), "run")
    for sub in ("fills", "fill-draws", "checkpoints", "sweep", "generators", "judges", "runs", "figures", "replication"):
        inside(out_dir, sub, "run folder")
    return out_dir


def fill_folder(out_dir: Path, method: str, seed: int | None = None) -> Path:
    """Where a method's fill lives: OUT/fills/<method>, or a further classifier seed's own draw,
    OUT/fill-draws/<method>/seed<k> (experiment.fills.fill_draws)."""
    if seed is None:
        return Path(out_dir) / "fills" / method
    return Path(out_dir) / "fill-draws" / method / f"seed{seed}"


def run_name(method: str, classifier: str, seed: int) -> str:
    """A run's folder and file name: <method>--<classifier>--seed<k>, a backbone's '/' as '+' (timm+resnet50)."""
    return f"{method}--{classifier.replace('/', '+')}--seed{seed}"


def fill_draw_seed(fill_seed: int, classifier_seed: int) -> int:
    """The base seed of classifier seed k's own fill draw (its per-image seeds derive from it)."""
    return derive_seed(fill_seed, "fill draw", classifier_seed)


def method_rebalancer(config: ExperimentConfig, m: MethodConfig, device: torch.device | str = "auto") -> Rebalancer:
    """The method's rebalancer. The one place where the experiment's `target` becomes its `sampling_strategy`
    (and `fill_seed` its `random_state`; rebalance.base.SET_ONCE)."""
    index = [x.name for x in config.methods].index(m.name)
    params = {**m.params, "sampling_strategy": config.sampling_strategy, "random_state": config.fill_seed,
              "device": device}
    return build_rebalancer(m.rebalancer, params, path=f"methods[{index}].params")


def load_imbalanced(config: ExperimentConfig) -> tuple[ImageSet, ImageSet, ImageSet, ImageSet | None]:
    """(original train, test, imbalanced train, validation) as the config's data, imbalance and validation sections
    describe; the validation images are held out of the imbalanced set (None without a validation section)."""
    train, test = load_train_test(config.data)
    imbalanced, validation = split_validation(apply_profile(train, config.imbalance), config.validation)
    return train, test, imbalanced, validation


def load_rebalanced(run_dir: Path, method: str) -> ImageSet:
    """A finished run's rebalanced training set for one method: its imbalanced real images + that method's fills."""
    run_dir = Path(run_dir)
    path = run_dir / "config.resolved.json"
    if not path.is_file():
        raise DiffbalanceError(f"{run_dir} is not a diffbalance run folder (no config.resolved.json)", "give the --out folder of `diffbalance run`")
    config = ExperimentConfig.from_dict(json.loads(path.read_text()))
    names = [m.name for m in config.methods]
    if method not in names:
        raise DiffbalanceError(f"run {run_dir} has no method {method!r}", f"use one of {', '.join(names)}")
    _, _, imbalanced, _ = load_imbalanced(config)
    fill_dir = run_dir / "fills" / method
    if not fill_dir.is_dir():  # runs made before identity methods wrote an (empty) fill folder
        return imbalanced
    return imbalanced.concat(load_fill(fill_dir, imbalanced.class_names), source=f"{run_dir} {method} rebalanced")
