"""Train a classifier on an ImageSet; the result classifies (`predict`) and extracts features (`features`).

The whole training set lives on the device as one uint8 tensor; each epoch cuts batches from a permutation
seeded by (seed, epoch), and each step's crop/flip/cutout/mix draws are seeded by (seed, step) (classify.step).
So a run is a pure function of (data, synthetic mask, config, seed): the same on every call on the CPU, and
exactly resumable from a checkpoint that stores weights (and their EMA), optimizer buffers, scheduler state and
the epoch (the RNG "state" is the epoch).

Two stages: (1) the whole network on all training images, generated ones weighted by `synthetic_weight`
(losses.py) and the balanced-softmax prior counted over `prior`; (2) only when `head_retrain_epochs` > 0, cRT:
a fresh linear head on frozen features and class-balanced real images (head_retrain.py), with `feature_fill`
also on synthetic features of a diffusion model trained on the stage-1 features in between (LDMLR;
feature_fill.py, its files in checkpoint_dir/feature-fill). Stage 2 checkpoints like stage 1 (its head optimizer
and schedule, plus "head_epoch" in the JSON), so a resume in either stage ends with the same weights as an
uninterrupted run. The lr schedule of both stages is classify.schedule.

The training curve (`TrainedClassifier.history`): one record per epoch of either stage, {"stage": "train" | "head",
"epoch": k (1-based, per stage), "loss": the epoch's mean loss, "lr": the lr at its end, "validation_accuracy": top-1
accuracy on `validation` (None without it), "seconds": the epoch's wall time, the validation pass excluded}. It rides
in every checkpoint's JSON, so a resumed run returns the whole curve, the same as an uninterrupted run's but for the
seconds. The validation pass runs in eval mode (batch norm untouched) and draws no random number, so passing
`validation` leaves the weights bit-identical; it costs one host sync per epoch.

Under torchrun, stage 1 is data-parallel (DDP, classify.ddp): the global batch, the data order and every random
draw are those of one process, each rank trains on its slice, rank 0 writes the checkpoints, and a checkpoint
resumes at any number of processes. Stage 2 (a linear head) runs whole on every rank, rank 0's head kept.
On CUDA (`fast_gpu_path`) a step runs in bf16 autocast with channels_last, cudnn autotuning and, with
`compile`, torch.compile; the CPU path is plain fp32, its batches channels_last too (`channels_last`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from diffbalance.infra.atomic import ensure_writable_dir
from diffbalance.infra.checkpoint import load_training_state, save_training_state
from diffbalance.classify import ddp as _ddp  # `ddp` is train_classifier's argument
from diffbalance.classify.augment import build_batch_mix, channel_mean_std, normalize, stats_tensor
from diffbalance.classify.checkpoint import RESUME_FOLDER, load_classifier_files, save_classifier
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.ema import ema_copy
from diffbalance.classify.feature_fill import FEATURE_FILL_FOLDER, fill_features
from diffbalance.classify.feature_fill import RNG_SCHEME as FILL_RNG_SCHEME
from diffbalance.classify.head_retrain import HeadStage, build_head_stage, reset_head, retrain_head_epoch
from diffbalance.classify.head_retrain import RNG_SCHEME as HEAD_RNG_SCHEME
from diffbalance.classify.losses import build_loss
from diffbalance.classify.models import build_classifier, check_input_size
from diffbalance.classify.schedule import lr_factor, lr_scheduler, scaled_lr
from diffbalance.classify.swap import SwapPool, swap_probabilities
from diffbalance.classify.step import Run, batch_layout, epoch_order, reads_share, train_step
from diffbalance.classify.loader import StreamedImages, epoch_batches
from diffbalance.data.imageset import ImageSet
from diffbalance.data.store import StoredImages, pixel_chunks
from diffbalance.infra.device import DeviceLike, fast_gpu_path, entry_device
from diffbalance.infra import distributed
from diffbalance.infra.distributed import Dist
from diffbalance.infra.errors import DiffbalanceError, require_type
from diffbalance.infra.progress import progress_bar
from diffbalance.infra.readout import AsyncScalar
from diffbalance.infra.seeding import derive_seed, forked_rng

__all__ = ["TrainedClassifier", "lr_factor", "train_classifier"]  # lr_factor: re-exported from schedule

CPU_EVAL_BATCH = 128  # on the CPU larger forward batches spill the caches; with channels_last (batch_layout) the
# small CNN predicts ~3.5× faster than in NCHW batches of 1,024, the same labels (benchmarks/predict.py)
LOG_EVERY_STEPS = 10  # how often the progress bar queues a (non-blocking) read-back of the loss
# every random draw of a run, so (seed, epoch) in a checkpoint is its whole RNG state
RNG_SCHEME = ("init: derive_seed(seed, 'init'); batch order: (seed, 'epoch', epoch); crop/flip/cutout on the device: "
              "(seed, 'augment', step); mix: (seed, 'mix', step)")


@dataclass(eq=False)
class TrainedClassifier:
    """A trained network with what it needs to be fed: uint8 images in, logits / labels / features out (on CPU)."""

    model: nn.Module  # eval mode, on `device`
    config: TrainConfig
    class_names: tuple[str, ...]
    mean: list[float]  # per-channel training-set mean, [0, 1] units
    std: list[float]  # per-channel training-set std, [0, 1] units
    train_seconds: float  # wall-clock training time, summed over resumed parts
    device: torch.device
    feature_fill: dict | None = None  # the feature fill's summary (classify.feature_fill), JSON-able; None: none
    history: list[dict] = field(default_factory=list)  # the training curve, one record per epoch (module docstring)

    def logits(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N, K) float32 logits of uint8 images (N, C, H, W)."""
        return self._batched(images, batch_size, self.model)

    def predict(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N,) int64 predicted class indices."""
        return self.logits(images, batch_size).argmax(dim=1)

    def features(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N, D) float32 penultimate features (`forward_features`, the input of the linear head)."""
        return self._batched(images, batch_size, self.model.forward_features)

    @torch.no_grad()
    def _batched(self, images: torch.Tensor, batch_size: int | None, fn) -> torch.Tensor:
        images = images if isinstance(images, StoredImages) else torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != len(self.mean):
            raise DiffbalanceError(
                f"classifier input must be uint8 (N, {len(self.mean)}, H, W), got {images.dtype} {tuple(images.shape)}",
                "pass ImageSet.images of the kind the classifier was trained on",
            )
        self.model.eval()
        fast = fast_gpu_path(self.device)
        step = batch_size or eval_batch(self.config, self.device)
        mean, std = stats_tensor(self.mean, self.device), stats_tensor(self.std, self.device)
        outputs = []
        for start in range(0, len(images), step):
            x = batch_layout(normalize(images[start : start + step].to(self.device), mean, std), self.config)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=fast and self.config.bf16):
                outputs.append(fn(x).float().cpu())
        if not outputs:  # no images: keep the output width
            width = fn(torch.zeros(1, len(self.mean), 8, 8, device=self.device)).shape[1]
            return torch.zeros(0, width)
        return torch.cat(outputs)

    def save(self, folder: Path) -> None:
        """model.safetensors + classifier.json (config, class names, normalisation) in `folder`."""
        meta = {
            "config": self.config.to_dict(),
            "class_names": list(self.class_names),
            "mean": self.mean,
            "std": self.std,
            "train_seconds": self.train_seconds,
            **({"feature_fill": self.feature_fill} if self.feature_fill is not None else {}),
            "history": self.history,
        }
        save_classifier(Path(folder), self.model, meta)

    @classmethod
    def load(cls, folder: Path, device: DeviceLike = "auto") -> TrainedClassifier:
        """A classifier saved by `save`, on `device` ("auto", "cpu", "cuda", "cuda:N" or a torch.device)."""
        device = entry_device(device)
        tensors, meta = load_classifier_files(Path(folder))
        config = TrainConfig.from_dict(meta["config"])
        model = build_classifier(config.model, len(meta["class_names"]), len(meta["mean"]),
                                 input_size=config.input_size)  # the weights are the saved ones
        model.load_state_dict(tensors)
        model = model.to(device).eval()
        if fast_gpu_path(device) and config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return cls(model, config, tuple(meta["class_names"]), meta["mean"], meta["std"], meta["train_seconds"], device,
                   meta.get("feature_fill"), meta.get("history", []))


def train_classifier(
    train: ImageSet,
    config: TrainConfig,
    *,
    device: DeviceLike = "auto",
    seed: int,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    synthetic: torch.Tensor | None = None,
    ddp: bool | None = None,
    validation: ImageSet | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    targets: torch.Tensor | None = None,
    swap_pool: ImageSet | None = None,
) -> TrainedClassifier:
    """Train `config.model` on `train` on `device` ("auto", "cpu", "cuda", "cuda:N" or a torch.device); resumes
    from `checkpoint_dir/resume` when it holds this run's checkpoint (in either stage, written at any world size).

    `synthetic` (N,) bool marks the generated images of `train` (None: all real); `synthetic_weight`,
    `prior: real` and head re-training read it, and with their defaults the run does not depend on it.
    `ddp`: None (or True) trains data-parallel over the process group when the job has several processes, False
    trains alone on this rank even then (a runner spreading whole runs over ranks); every rank of a DDP run
    returns the same plain (unwrapped) model. `validation`: real images whose accuracy each epoch's history record
    holds (weights unchanged by it); `on_epoch` is called with each record as it is made (e.g.
    infra.tensorboard's `Scalars.recorder`). `targets`: (N, K) class probabilities that replace the one-hot labels
    in the main stage's loss (Diff-Mix's soft labels of translated images); head re-training keeps the labels.
    `swap_pool`: generated images that `config.swap_share` swaps in per sample (classify.swap), the swap probability
    of a class from its real images (those `synthetic` leaves unmarked)."""
    require_type(train, ImageSet, "train", "an ImageSet")
    require_type(config, TrainConfig, "config", "a TrainConfig (TrainConfig.from_dict({...}) for a mapping)")
    require_type(seed, int, "seed", "an int")
    device = entry_device(device)
    world = _ddp.training_world(ddp)
    if len(train) < 2:
        raise DiffbalanceError(f"cannot train a classifier on {len(train)} image(s)", "pass a larger training set")
    synthetic = _synthetic_mask(synthetic, len(train))
    targets = _checked_targets(targets, train, config)
    run = _build_run(train, config, device, seed, synthetic, world)
    run.targets = None if targets is None else targets.to(device)
    run.swap = _swap_pool(swap_pool, train, synthetic, config, device)
    head = build_head_stage(run.model, train.labels, ~synthetic, config) if config.head_retrain_epochs else None
    meta = {"config": config.to_dict(), "seed": seed, "data": _fingerprint(train), "rng": RNG_SCHEME}
    if targets is not None:  # a resume must train on the same soft labels
        meta["targets"] = hashlib.sha256(targets.numpy().tobytes()).hexdigest()
    if run.swap is not None:  # … and swap from the same pool
        meta["swap"] = _fingerprint(swap_pool)
    meta.update(_synthetic_fingerprint(synthetic, config))
    if head is not None:
        meta["rng"] += "; " + HEAD_RNG_SCHEME + ("; " + FILL_RNG_SCHEME if config.feature_fill else "")
    folder = None if checkpoint_dir is None else ensure_writable_dir(Path(checkpoint_dir)) / RESUME_FOLDER
    start_epoch, head_start, seconds_before, history = _resume(folder, meta, run, head)
    curve = _Curve(history, _validation_tensors(validation, train, device), on_epoch)

    started = time.perf_counter()

    def elapsed() -> float:  # training seconds, summed over resumed parts
        return seconds_before + time.perf_counter() - started

    if head_start == 0:  # a stage-2 checkpoint holds the finished stage 1
        every = config.checkpoint_every(config.epochs)
        steps_left = (config.epochs - start_epoch) * run.steps_per_epoch
        with progress_bar(f"train {config.model}", steps_left, enabled=progress) as advance:
            for epoch in range(start_epoch, config.epochs):
                reported, tick = _EpochLoss(advance), time.perf_counter()
                _train_one_epoch(run, epoch, reported, tick)
                # validated: the weights the run would return if it ended here (the EMA when there is one)
                curve.add(run, "train", epoch + 1, reported.loss, run.optimizer, time.perf_counter() - tick,
                          run.ema if run.ema is not None else run.model)
                done = epoch + 1
                if _checkpoint_due(folder, every, done, config.epochs):
                    state = {**meta, "epoch": done, "train_seconds": elapsed(), "history": curve.records}
                    _save(run, folder, _stage_one_modules(run), run.optimizer, run.scheduler, state)
        _end_stage_one(run)
    if head is not None:
        if config.feature_fill is not None:  # LDMLR: synthetic features for stage 2, their files beside resume/
            fills = None if folder is None else folder.parent / FEATURE_FILL_FOLDER
            head.fill = fill_features(run, ~synthetic, fills, meta, _same_run, head_start > 0, progress)
        _retrain_head(run, head, head_start, folder, meta, elapsed, progress, curve)
    model = _plain_model(run, train).eval()
    fill = None if head is None or head.fill is None else head.fill.summary
    return TrainedClassifier(model, config, train.class_names, run.mean, run.std, elapsed(), device, fill,
                             curve.records)


def _checkpoint_due(folder: Path | None, every: int, done: int, total: int) -> bool:
    """Every `every` epochs and after the last one (when there is a folder and `every` > 0)."""
    return folder is not None and every > 0 and (done % every == 0 or done == total)


def _stage_one_modules(run: Run) -> dict[str, nn.Module]:
    """What a stage-1 checkpoint holds: the model (unwrapped, so any world size can resume it) and its EMA."""
    return {"model": run.model, **({"ema": run.ema} if run.ema is not None else {})}


def _save(run: Run, folder: Path, modules: dict, optimizer, scheduler, state: dict) -> None:
    """Rank 0 writes the checkpoint while the other ranks wait (their weights and optimizers are the same)."""
    distributed.on_main(lambda: save_training_state(folder, modules, optimizer, scheduler, state), False, run.world)


def _end_stage_one(run: Run) -> None:
    """Rank 0's batch-norm statistics on every rank; with an EMA, the average becomes the model (stage 2 and the
    returned classifier use it)."""
    _ddp.broadcast_state(run.world, run.model, run.ema)
    if run.ema is not None:
        run.model.load_state_dict(run.ema.state_dict())


def _retrain_head(
    run: Run, head: HeadStage, start: int, folder: Path | None, meta: dict, elapsed: Callable[[], float],
    progress: bool, curve: _Curve,
) -> None:
    """Stage 2 from head epoch `start`: a fresh head when it begins, then class-balanced epochs, checkpointed.
    Every rank trains the same head on the whole batch (it is small); rank 0's is kept."""
    cfg = run.config
    if start == 0:  # a resumed stage 2 has its partly trained head back from the checkpoint
        reset_head(run.model, run.seed)
    every = cfg.checkpoint_every(cfg.head_retrain_epochs)
    steps_left = (cfg.head_retrain_epochs - start) * head.steps_per_epoch
    with progress_bar(f"retrain head {cfg.model}", steps_left, enabled=progress) as advance:
        for epoch in range(start, cfg.head_retrain_epochs):
            reported, tick = _EpochLoss(advance), time.perf_counter()
            retrain_head_epoch(run, head, epoch, reported)
            curve.add(run, "head", epoch + 1, reported.loss, head.optimizer, time.perf_counter() - tick, run.model)
            done = epoch + 1
            if _checkpoint_due(folder, every, done, cfg.head_retrain_epochs):
                state = {**meta, "epoch": cfg.epochs, "head_epoch": done, "train_seconds": elapsed(),
                         "history": curve.records}
                _save(run, folder, {"model": run.model}, head.optimizer, head.scheduler, state)
    _ddp.broadcast_state(run.world, run.model.head, buffers_only=False)


def _checked_targets(targets: torch.Tensor | None, train: ImageSet, config: TrainConfig) -> torch.Tensor | None:
    """(N, K) float32 class probabilities on the CPU, or None; a one-line error for a wrong shape, values outside
    [0, 1], rows that do not sum to 1, or batch mixing (which draws soft labels of its own)."""
    if targets is None:
        return None
    t = torch.as_tensor(targets)
    want = (len(train), train.num_classes)
    if tuple(t.shape) != want or not t.is_floating_point():
        raise DiffbalanceError(f"targets must be a float tensor of shape {want}, got {t.dtype} {tuple(t.shape)}",
                               "pass one row of class probabilities per training image")
    t = t.to(torch.float32).cpu()
    if bool((t < 0).any() | (t > 1).any()) or not torch.allclose(t.sum(1), torch.ones(len(t)), atol=1e-5):
        raise DiffbalanceError("targets must be class probabilities (each in [0, 1], each row summing to 1)",
                               "normalise every row")
    if config.batch_mix != "none":
        raise DiffbalanceError("soft targets cannot be combined with batch_mix (it draws soft labels of its own)",
                               "set batch_mix: none, or pass no targets")
    return t


def _swap_pool(pool: ImageSet | None, train: ImageSet, synthetic: torch.Tensor, config: TrainConfig,
               device: torch.device) -> SwapPool | None:
    """The swap pool on the device (classify.swap), or None when `swap_share` is 0; one-line errors for a pool
    missing or of other classes or image size."""
    if config.swap_share == 0:
        return None
    if pool is None or len(pool) == 0:
        raise DiffbalanceError("swap_share is set, but no pool of generated images was given",
                               "pass swap_pool (the method's generated fill), or set swap_share: 0")
    if pool.num_classes != train.num_classes or pool.images.shape[1:] != train.images.shape[1:]:
        raise DiffbalanceError(f"the swap pool holds {pool.num_classes} classes of {tuple(pool.images.shape[1:])}, "
                               f"the training set {train.num_classes} of {tuple(train.images.shape[1:])}",
                               "pass generated images of the training set's classes and size")
    real = torch.bincount(train.labels[~synthetic], minlength=train.num_classes).tolist()
    return SwapPool.build(pool, swap_probabilities(real, config.swap_share), device)


def _synthetic_mask(synthetic: torch.Tensor | None, n: int) -> torch.Tensor:
    """The (N,) bool CPU mask of generated images; None → all real."""
    if synthetic is None:
        return torch.zeros(n, dtype=torch.bool)
    mask = torch.as_tensor(synthetic)
    if mask.dtype != torch.bool or tuple(mask.shape) != (n,):
        raise DiffbalanceError(
            f"synthetic must be a bool tensor of shape ({n},), got {mask.dtype} {tuple(mask.shape)}",
            "pass True for each generated training image and False for each real one, in training-set order",
        )
    return mask.cpu()


def _build_run(
    train: ImageSet,
    config: TrainConfig,
    device: torch.device,
    seed: int,
    synthetic: torch.Tensor | None = None,
    world: Dist | None = None,
) -> Run:
    """The run's state on `device`; under DDP (`world` active) every rank builds the same, and a failure on one
    rank is raised on all of them before the model is wrapped (a collective)."""
    world = world or Dist()
    synthetic = _synthetic_mask(synthetic, len(train))
    batch_size = min(config.batch_size, len(train))
    local = _ddp.check_world(world, device, batch_size, config.sync_batchnorm)
    run = distributed.agree(lambda: _local_run(train, config, device, seed, synthetic, batch_size), world)
    run.world, run.local = world, local
    run.step_model = _step_model(run.model, config, device, world)
    run.model = _ddp.unwrapped(run.step_model)  # the same module unless sync batch norm replaced a BN root
    return run


def _local_run(
    train: ImageSet, config: TrainConfig, device: torch.device, seed: int, synthetic: torch.Tensor, batch_size: int
) -> Run:
    check_input_size(config.model, train.image_size)
    # a set that fits moves to the device once; a stored one is read in batches (classify.loader)
    images = StreamedImages(train.images, device) if train.stored else train.images.to(device)
    with forked_rng(derive_seed(seed, "init")):  # same seed → same initial weights, caller's RNG untouched
        model = build_classifier(config.model, train.num_classes, train.channels, pretrained=config.pretrained,
                                 input_size=config.input_size)
    # a pretrained backbone sees images normalised as in its pretraining; a model from scratch, by the set's stats
    mean, std = getattr(model, "normalization", None) or channel_mean_std(images)  # once, where the images are
    mean, std = list(mean), list(std)
    if config.finetune == "linear-probe":  # only pretrained backbones (TrainConfig checks it) have a body to freeze
        model.freeze_backbone()
    model = model.to(device)
    if fast_gpu_path(device) and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train) // batch_size  # the last partial batch is dropped (batch norm, equal steps)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    lr = scaled_lr(config.lr, batch_size, config.lr_reference_batch)
    optimizer = torch.optim.SGD(
        parameter_groups(model, lr, config.backbone_lr_factor, split=config.finetune == "head-then-full"),
        lr=lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    frozen = config.head_epochs * steps_per_epoch if config.finetune == "head-then-full" else 0
    scheduler = lr_scheduler(optimizer, schedule=config.schedule, warmup_steps=warmup_steps, total_steps=total_steps,
                             frozen_steps=frozen)
    return Run(
        model=model,
        step_model=model,
        ema=ema_copy(model) if config.ema_decay > 0 else None,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=build_loss(config.loss, _prior_counts(train, synthetic, config), config.label_smoothing, device),
        mix=build_batch_mix(config.batch_mix, config.batch_mix_alpha, train.num_classes),
        images=images,
        labels=train.labels.to(device),
        # unweighted when every image weighs 1, so the loss stays the plain batch mean (bit-identical to no mask)
        weighted=synthetic.to(device) if config.synthetic_weight != 1 and bool(synthetic.any()) else None,
        mean=mean,
        std=std,
        norm=(stats_tensor(mean, device), stats_tensor(std, device)),
        rng=torch.Generator(device=device),
        config=config,
        seed=seed,
        device=device,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        world=Dist(),
        local=slice(0, batch_size),
    )


def parameter_groups(model: nn.Module, lr: float, backbone_lr_factor: float, split: bool = False) -> list[dict]:
    """The backbone at lr × backbone_lr_factor, then the head at the recipe's lr (the last group); frozen parameters
    left out. One group when the factor is 1 and no `split` is asked, as before this option existed (the same
    optimizer state layout)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if backbone_lr_factor == 1 and not split:
        return [{"params": [p for _, p in trainable]}]
    head = [p for n, p in trainable if n.startswith("head.")]
    body = [p for n, p in trainable if not n.startswith("head.")]
    return [{"params": body, "lr": lr * backbone_lr_factor}, {"params": head, "lr": lr}]


def _step_model(model: nn.Module, config: TrainConfig, device: torch.device, world: Dist) -> nn.Module:
    """`model` as a step calls it: under DDP over `world`, then torch.compile'd on the fast GPU path."""
    step_model = _ddp.wrap(model, device, world, config.sync_batchnorm)
    if fast_gpu_path(device):
        torch.backends.cudnn.benchmark = True  # every step has the same shapes (the partial batch is dropped)
        if config.compile:
            step_model = torch.compile(step_model)
    return step_model


def _plain_model(run: Run, train: ImageSet) -> nn.Module:
    """The trained module without sync batch norm (a fresh copy with plain BatchNorm2d when it was converted)."""
    if not any(isinstance(m, nn.SyncBatchNorm) for m in run.model.modules()):
        return run.model
    with forked_rng(derive_seed(run.seed, "init")):
        plain = build_classifier(run.config.model, train.num_classes, train.channels,
                                 input_size=run.config.input_size)
    plain.load_state_dict(run.model.state_dict())
    plain = plain.to(run.device)
    return plain.to(memory_format=torch.channels_last) if run.fast and run.config.channels_last else plain


def _prior_counts(train: ImageSet, synthetic: torch.Tensor, config: TrainConfig) -> list[int]:
    """Class counts of balanced_softmax's prior: every training image ("train") or the real ones only ("real")."""
    if config.prior == "train":
        return train.counts()
    return torch.bincount(train.labels[~synthetic], minlength=train.num_classes).tolist()


def _train_one_epoch(run: Run, epoch: int, advance, since: float) -> None:
    """Every step of epoch `epoch`; the loss is read back (a GPU sync) once, at the end, to check it is finite."""
    run.model.train()
    order = epoch_order(run, epoch)
    loss_sum = torch.zeros((), device=run.device)
    readout = AsyncScalar(run.device)
    images_done = 0
    read_ahead = (epoch_batches(run.images, order, run.batch_size, run.steps_per_epoch,
                                rows=run.local if reads_share(run) else slice(None))
                  if isinstance(run.images, StreamedImages) else None)  # a stored set: batches from workers
    for i in range(run.steps_per_epoch):
        idx = order[i * run.batch_size : (i + 1) * run.batch_size]  # (B,) the global batch
        batch = None if read_ahead is None else next(read_ahead)
        loss_sum += train_step(run, idx, epoch * run.steps_per_epoch + i, batch)
        images_done += run.batch_size
        if (i + 1) % LOG_EVERY_STEPS == 0:
            img_s = images_done / max(1e-9, time.perf_counter() - since)
            readout.send(loss_sum / (i + 1))
            advance(1, epoch=epoch + 1, **readout.fields(), img_s=int(img_s))
            images_done, since = 0, time.perf_counter()
        else:
            advance(1)
    loss = float(_ddp.all_reduce_mean(run.world, loss_sum)) / run.steps_per_epoch  # every rank decides alike
    advance(0, epoch=epoch + 1, loss=loss)
    if not math.isfinite(loss):
        raise DiffbalanceError(f"training loss became {loss} in epoch {epoch + 1}", "lower lr")


class _EpochLoss:
    """An epoch's progress callback that keeps the last loss reported to it: both stages' epoch functions report
    the epoch's mean loss last (stage 1 after its final step, stage 2 with its final step)."""

    def __init__(self, advance: Callable[..., None]):
        self.advance, self.loss = advance, None

    def __call__(self, n: int = 1, **fields) -> None:
        if "loss" in fields:
            self.loss = float(fields["loss"])
        self.advance(n, **fields)


@dataclass
class _Curve:
    """The training curve as it grows (module docstring): the records so far, resumed ones first."""

    records: list[dict]
    validation: tuple[torch.Tensor, torch.Tensor] | None  # (V, C, H, W) uint8 and (V,) int64, on the device
    on_epoch: Callable[[dict], None] | None

    def add(self, run: Run, stage: str, epoch: int, loss: float | None, optimizer: torch.optim.Optimizer,
            seconds: float, model: nn.Module) -> None:
        accuracy = None if self.validation is None else _accuracy(run, model, *self.validation)
        record = {"stage": stage, "epoch": epoch, "loss": loss, "lr": optimizer.param_groups[0]["lr"],
                  "validation_accuracy": accuracy, "seconds": round(seconds, 3)}
        self.records.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)


def _validation_tensors(
    validation: ImageSet | None, train: ImageSet, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The validation images and labels on the device, once for the run (None without validation)."""
    if validation is None:
        return None
    if validation.class_names != train.class_names or validation.images.shape[1:] != train.images.shape[1:]:
        raise DiffbalanceError(
            f"validation images ({len(validation.class_names)} classes, {tuple(validation.images.shape[1:])}) do not "
            f"match the training images ({len(train.class_names)} classes, {tuple(train.images.shape[1:])})",
            "pass held-out images of the same classes, in the same class order and size",
        )
    return validation.images.to(device), validation.labels.to(device)


@torch.no_grad()
def _accuracy(run: Run, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `model` on uint8 `images` (V, C, H, W) with `labels` (V,), both on the device, as
    `TrainedClassifier.predict` computes it: eval mode (batch norm's statistics untouched; no random draw), the
    model's mode restored after, one host sync."""
    was_training, cfg = model.training, run.config
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    step = eval_batch(cfg, run.device)
    for start in range(0, len(images), step):
        x = batch_layout(normalize(images[start : start + step], *run.norm), cfg)  # (b, C, H, W) float32
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.fast and cfg.bf16):
            predicted = model(x).argmax(dim=1)  # (b,)
        correct += (predicted == labels[start : start + step]).sum()
    model.train(was_training)
    return int(correct) / max(1, len(images))


def eval_batch(config: TrainConfig, device: torch.device) -> int:
    """Images per forward pass when predicting: `eval_batch_size`, on the CPU at most CPU_EVAL_BATCH."""
    return config.eval_batch_size if fast_gpu_path(device) else min(config.eval_batch_size, CPU_EVAL_BATCH)


def _resume(
    folder: Path | None, meta: dict, run: Run, head: HeadStage | None = None
) -> tuple[int, int, float, list[dict]]:
    """(epochs done, head epochs done, seconds spent, the curve so far); loads the checkpoint into `run` (stage 1)
    or into the model and `head`'s optimizer and schedule (a checkpoint written in stage 2) when there is one. A
    checkpoint written before curves were kept has none: the resumed curve then starts at its epoch."""
    loaded = None if folder is None else load_training_state(folder)
    if loaded is None:
        return 0, 0, 0.0, []
    saved = loaded.meta
    if not _same_run(saved, meta):
        raise DiffbalanceError(
            f"the checkpoint in {folder} comes from another run (different config, seed or training images)",
            f"delete {folder} to start afresh, or pass another checkpoint folder",
        )
    head_done = int(saved.get("head_epoch", 0))
    if head_done and head is not None:  # the configs match, so a stage-2 checkpoint implies a head stage here
        loaded.restore({"model": run.model}, head.optimizer, head.scheduler)
    else:
        loaded.restore(_stage_one_modules(run), run.optimizer, run.scheduler)
    return int(saved["epoch"]), head_done, float(saved["train_seconds"]), list(saved.get("history", []))


def _same_run(saved: dict, meta: dict) -> bool:
    """Whether a checkpoint's meta describes this run: config (but for options that leave the weights alone),
    seed, training images, the soft targets and, when the config reads it, the synthetic mask."""
    try:  # a checkpoint saved before an option existed lacks its key: read it with the option's default
        then = TrainConfig.from_dict(saved["config"]).to_dict()
    except DiffbalanceError:  # e.g. a model name no longer registered
        return False
    same_config = _weights_config(then) == _weights_config(meta["config"])
    same_mask = all(saved.get(k) == meta.get(k) for k in ("synthetic", "targets", "swap"))
    return same_config and same_mask and saved["seed"] == meta["seed"] and saved["data"] == meta["data"]


def _weights_config(config: dict) -> dict:
    """A TrainConfig dict without the options that do not change the weights (how often to checkpoint, the
    prediction batch)."""
    out = {k: v for k, v in config.items() if k not in ("eval_batch_size", "checkpoint_every_epochs")}
    if out.get("feature_fill"):
        out["feature_fill"] = {k: v for k, v in out["feature_fill"].items() if k != "checkpoint_every_steps"}
    return out


def _fingerprint(train: ImageSet) -> dict:
    """What identifies the training images: their shape, class counts and a SHA-256 of pixels and labels."""
    h = hashlib.sha256()
    for rows in pixel_chunks(train.images):  # in memory: views, no copy; stored: read a chunk at a time
        h.update(rows)
    h.update(train.labels.contiguous().numpy())
    return {"shape": list(train.images.shape), "counts": train.counts(), "sha256": h.hexdigest()}


def _synthetic_fingerprint(synthetic: torch.Tensor, config: TrainConfig) -> dict:
    """{"synthetic": count and SHA-256 of the mask} when the config reads the mask, else {}: runs with the default
    options do not depend on it, so their checkpoints (and those saved before the mask existed) resume as before."""
    reads_mask = config.synthetic_weight != 1 or config.prior == "real" or config.head_retrain_epochs > 0
    if not reads_mask:
        return {}
    digest = hashlib.sha256(synthetic.numpy().tobytes()).hexdigest()
    return {"synthetic": {"generated": int(synthetic.sum()), "sha256": digest}}
