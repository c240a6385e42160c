"""Feature fills for classifier re-training (LDMLR: Han et al., "Latent-based Diffusion Model for Long-tailed
Recognition", CVPR-W 2024): between stage 1 and stage 2 (cRT, classify.head_retrain) of `train_classifier`,

    1. extract   f = forward_features(crop/flip(x)) of every *real* training image, `views` times (eval mode, frozen);
    2. train     a class-conditional diffusion model on those features (generate.features.train);
    3. sample    m_c = ⌊factor · (n_max − n_c) + ½⌋ features of each class c with classifier-free guidance
                 (generate.features.sample), n_c = real training images of class c;
    4. stage 2   draws class-balanced from the real images and the synthetic features of each class.

Image fills of the training set (its `synthetic` images) are not used: the features describe the real data.
A class without real images gets no synthetic features (stage 2 draws only classes with real images).

Random draws (explicit seeds only): view v of chunk k of the real images (EXTRACT_CHUNK images, fixed so the
features do not depend on eval_batch_size) is cropped/flipped under derive_seed(seed, "feature_fill_augment", v, k);
the feature model's init and steps under derive_seed(seed, "feature_fill_model") (generate.features.train);
synthetic feature j of class c from derive_seed(seed, "feature_fill", c, j) alone, at any sampling batch size.

Files, with a checkpoint folder (none without one), beside the classifier's `resume/` (a folder that is replaced
whole at every checkpoint, so nothing else may live inside it):
    <checkpoint_dir>/feature-fill/train/     the feature model's latest training checkpoint (state.safetensors +
                                             state.json: model, AdamW, schedule, step, losses), every
                                             feature_fill.checkpoint_every_steps steps and after the last
    <checkpoint_dir>/feature-fill/features/  features.safetensors (features (M, D), labels (M,)) + features.json
                                             (the run's identity and the fill's summary), written before stage 2
Each holds the classifier run's identity (config, seed, training images, synthetic mask) and is refused by another
run. A resume reads the sampled features back when they exist (and must, once stage 2 has started: its
checkpoint holds a head trained on them), else resumes the feature model's training, else starts it.

Several processes (DDP): stage 1 ends with the same network on every rank, and every rank extracts the same
features, trains the same small model from the same seeds and samples the same features (no DDP wrapper: the model
is small, and a rank working alone needs no collective). Rank 0 alone writes the files (distributed.on_main over
the run's world, as classify.train's checkpoints); every rank reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from diffbalance.infra import distributed
from diffbalance.infra.checkpoint import read_folder, write_folder
from diffbalance.classify.head_retrain import SyntheticFeatures, TrainingRun, frozen_features
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.features.config import FeatureFillConfig
from diffbalance.infra.seeding import derive_seed

FEATURE_FILL_FOLDER = "feature-fill"  # beside <checkpoint_dir>/resume
TRAIN_FOLDER, FEATURES_FOLDER = "train", "features"
FEATURES_FILE, FEATURES_META = "features.safetensors", "features.json"
EXTRACT_CHUNK = 512  # real images per crop/flip draw and forward pass of the extraction
LOSS_SUMMARY_SHARE = 0.1  # the summary's loss at start/end: the mean over the first/last 10 % of the steps
RNG_SCHEME = ("feature fill: crop/flip (seed, 'feature_fill_augment', view, chunk); "
              "model (seed, 'feature_fill_model'); feature j of class c (seed, 'feature_fill', c, j)")

SameRun = Callable[[dict, dict], bool]  # (saved meta, this run's meta) → whether the files are this run's


def synthetic_counts(real_counts: list[int], factor: float) -> list[int]:
    """Synthetic features per class: ⌊factor · (n_max − n_c) + ½⌋ (half up), 0 for a class without real images."""
    n_max = max(real_counts)
    return [int(factor * (n_max - n) + 0.5) if n > 0 else 0 for n in real_counts]


def fill_features(
    run: TrainingRun,
    real: torch.Tensor,  # (N,) bool, CPU: the real training images
    folder: Path | None,  # <checkpoint_dir>/feature-fill, or None: nothing written or read
    meta: dict,  # the classifier run's identity (classify.train)
    same_run: SameRun,
    stage_two_started: bool,  # a stage-2 checkpoint was resumed: the features must be read back
    progress: bool = True,
) -> SyntheticFeatures:
    """The synthetic features of stage 2: read back from `folder`, or made (and saved there)."""
    cfg: FeatureFillConfig = run.config.feature_fill
    # every rank reads before any rank goes on (and may write): each finds what the others find
    saved = distributed.agree(lambda: _load(folder, meta, same_run, run.device, cfg.synthetic_weight), run.world)
    if saved is not None:
        return saved
    if stage_two_started:  # (only a run with a checkpoint folder resumes in stage 2)
        raise DiffbalanceError(f"the classifier checkpoint is in stage 2, but its synthetic features are missing from "
                               f"{folder / FEATURES_FOLDER}", f"delete {folder.parent} to start the run afresh")
    fill = _make(run, real, folder, meta, same_run, progress)
    if folder is not None:
        record = {**meta, "summary": fill.summary}
        tensors = {"features": fill.features, "labels": fill.labels}
        distributed.on_main(lambda: write_folder(folder / FEATURES_FOLDER, FEATURES_FILE, tensors, FEATURES_META,
                                                 record), False, run.world)
    return fill


def _make(run: TrainingRun, real: torch.Tensor, folder: Path | None, meta: dict, same_run: SameRun,
          progress: bool) -> SyntheticFeatures:
    """Extract, train, sample (module header); with nothing to sample, no feature model is trained."""
    cfg: FeatureFillConfig = run.config.feature_fill
    num_classes = run.model.head.out_features
    real_counts = torch.bincount(run.labels.cpu()[real], minlength=num_classes).tolist()
    counts = synthetic_counts(real_counts, cfg.factor)
    summary = {"views": cfg.views, "real_per_class": real_counts, "synthetic_per_class": counts,
               "feature_model_steps": 0, "feature_model_loss_start": None, "feature_model_loss_end": None,
               "extract_seconds": 0.0, "train_seconds": 0.0, "sample_seconds": 0.0}
    feature_dim = run.model.head.in_features
    if sum(counts) == 0:  # factor 0 (or a balanced set): stage 2 is plain cRT
        empty = torch.zeros(0, feature_dim, device=run.device)
        return SyntheticFeatures(empty, torch.zeros(0, dtype=torch.long, device=run.device), cfg.synthetic_weight,
                                 summary)
    from diffbalance.generate.features.sample import sample_features  # diffusers: imported when a fill runs
    from diffbalance.generate.features.train import Checkpointing, train_feature_model

    started = time.perf_counter()
    real_idx = torch.nonzero(real).squeeze(1).to(run.device)  # (R,)
    features = extract_features(run, real_idx, cfg.views)  # (V·R, D)
    labels = run.labels[real_idx].repeat(cfg.views)  # (V·R,) view-major, as the features
    summary["extract_seconds"] = time.perf_counter() - started
    checkpointing = None if folder is None else Checkpointing(folder / TRAIN_FOLDER, meta, same_run, run.world)
    trained = train_feature_model(features, labels, num_classes, cfg, seed=derive_seed(run.seed, "feature_fill_model"),
                                  checkpointing=checkpointing, progress=progress)
    started = time.perf_counter()
    wanted = [c for c, m in enumerate(counts) for _ in range(m)]  # class c's m_c features, class by class
    seeds = [derive_seed(run.seed, "feature_fill", c, j) for c, m in enumerate(counts) for j in range(m)]
    synthetic = sample_features(trained.model, wanted, seeds, cfg)  # (M, D)
    k = max(1, round(LOSS_SUMMARY_SHARE * len(trained.losses)))
    summary.update(feature_model_steps=len(trained.losses), train_seconds=trained.seconds,
                   feature_model_loss_start=sum(trained.losses[:k]) / k,
                   feature_model_loss_end=sum(trained.losses[-k:]) / k,
                   sample_seconds=time.perf_counter() - started)
    wanted_labels = torch.tensor(wanted, dtype=torch.long, device=run.device)
    return SyntheticFeatures(synthetic, wanted_labels, cfg.synthetic_weight, summary)


@torch.no_grad()
def extract_features(run: TrainingRun, real_idx: torch.Tensor, views: int) -> torch.Tensor:
    """(views·R, D) float32 frozen features of the images `real_idx` (R,), view-major: view v of image i at
    v·R + i, under the recipe's crop/flip seeded per (view, chunk)."""
    run.model.eval()  # frozen: batch norm keeps its stage-1 statistics
    out = []
    for view in range(views):
        for k, start in enumerate(range(0, len(real_idx), EXTRACT_CHUNK)):
            idx = real_idx[start : start + EXTRACT_CHUNK]
            seed = derive_seed(run.seed, "feature_fill_augment", view, k)
            out.append(frozen_features(run, run.images[idx], seed))  # (chunk, D)
    return torch.cat(out)


def _load(folder: Path | None, meta: dict, same_run: SameRun, device: torch.device,
          weight: float) -> SyntheticFeatures | None:
    """The saved features of this run, on `device`; None when there are none."""
    if folder is None or not (folder / FEATURES_FOLDER / FEATURES_META).is_file():
        return None
    tensors, saved = read_folder(folder / FEATURES_FOLDER, FEATURES_FILE, FEATURES_META, "feature fill")
    if not same_run(saved, meta):
        raise DiffbalanceError(f"the synthetic features in {folder} come from another run",
                               f"delete {folder.parent} to start afresh, or pass another checkpoint folder")
    return SyntheticFeatures(tensors["features"].to(device), tensors["labels"].to(device), weight, saved["summary"])
