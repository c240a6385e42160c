"""The classifier-training recipe as one frozen, validated object, saved beside every checkpoint and result.

The paper gives no recipe (PAPER.md, "Training recipe not given"); the defaults are the usual CIFAR one:
SGD with Nesterov momentum 0.9, weight decay 5e-4, per-step cosine decay after a linear warmup,
random crop (pad 4) + horizontal flip.

Synthetic-aware options (no-ops at their defaults, so a run without them is today's run bit for bit):
- synthetic_weight: the loss weight of a generated image, real images weigh 1 (DiffuLT's weighted cross-entropy,
  Shao et al. 2024); the batch loss is Σ w_i ℓ_i / Σ w_i, so its scale (hence the effective lr) does not move with
  the share of generated images in a batch.
- prior: which images balanced_softmax's class prior counts: all training images, or only the real ones (Fill-Up,
  Shin et al. 2023; SYNAuG, Ye-Bin et al. 2023: a filled set looks balanced, the real world it models does not).
- head_retrain_epochs / head_retrain_lr: classifier re-training (cRT, Kang et al. 2020, "Decoupling representation
  and classifier for long-tailed recognition"; LDMLR's last-layer retraining): after the main training, freeze the
  features, re-initialise the linear head and train it on class-balanced *real* images (classify.head_retrain).
- feature_fill: LDMLR's feature-space fill of that stage (Han et al. 2024, "Latent-based Diffusion Model for
  Long-tailed Recognition"): a small diffusion model trained on the stage-1 features of the real images adds
  synthetic features of the rarer classes to the head's class-balanced draws (classify.feature_fill; its options:
  generate.features.config.FeatureFillConfig). Needs head_retrain_epochs > 0; factor 0 is plain cRT bit for bit.

Speed and scale options (no-ops at their defaults on one process):
- lr_reference_batch: the batch `lr` is given for; lr is scaled linearly to batch_size (classify.schedule).
- cutout, ema_decay: the fast recipe's optional regularisers (classify.augment, classify.ema).
- sync_batchnorm: under DDP (several processes, classify.train) batch norm normalises each rank's slice of the
  global batch with that slice's statistics; true converts it to nn.SyncBatchNorm, so the statistics are the
  global batch's, as on one process. CUDA only in this torch: a CPU (gloo) DDP run refuses it at start.
- FAST_RECIPE below: the TrainConfig overrides of the fast CIFAR recipe, for presets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from diffbalance.classify.augment import BatchMix
from diffbalance.classify.losses import LossName
from diffbalance.classify.models import CLASSIFIERS
from diffbalance.infra.configs import Config, current_path
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.features.config import FeatureFillConfig


ModelName = str  # a registered classifier (classify.models.CLASSIFIERS), checked by `check_model`


def check_model(name: str, key: str) -> bool:
    """A one-line error naming `key` and the registered classifiers unless `name` is one of them; whether it is a
    backbone that takes pretrained weights and an input size."""
    return bool(CLASSIFIERS.entry(name, where=key).get("pretrainable"))


@dataclass(frozen=True)
class TrainConfig(Config):
    model: ModelName = "small_cnn"  # a registered classifier (classify.models.available_classifiers()), or an
    # ImageNet backbone: timm/<model> (any timm model) or tv/<model> (torchvision's)
    pretrained: bool | str = False  # backbones: true = the timm / torchvision weights (download or cache), a path = a
    # local safetensors file of the same model, false = random init; CIFAR-stem models train from scratch
    input_size: int | None = None  # backbones: the side images are resized to inside the model; None = its own
    finetune: Literal["full", "linear-probe", "head-then-full"] = "full"  # full: every layer learns | linear-probe:
    # the head alone on the frozen backbone's features, each image's computed once and kept (no crop, cutout or
    # batch mixing) | head-then-full: the head alone for head_epochs (the backbone's lr 0), then every layer
    head_epochs: int = 1  # head-then-full: the epochs the head learns alone
    backbone_lr_factor: float = 1.0  # lr of every layer but the head = lr × this (fine-tuning: e.g. 0.1)
    epochs: int = 30  # passes over the training set
    batch_size: int = 128  # images per optimiser step (the last partial batch of an epoch is dropped)
    lr: float = 0.1  # peak learning rate, reached at the end of the warmup
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (needs momentum > 0)
    weight_decay: float = 5e-4  # L2 penalty on every parameter (SGD's coupled weight decay)
    schedule: Literal["cosine", "onecycle"] = "cosine"  # cosine: linear warmup then per-step cosine to 0 | OneCycleLR
    warmup_epochs: float = 1.0  # epochs of linear warmup, at most the whole run (onecycle: the rising part; 0 → 30 %)
    label_smoothing: float = 0.0  # ε of label smoothing, in [0, 1)
    loss: LossName = "ce"  # balanced_softmax: logits + log prior of the counts (Ren et al.)
    batch_mix: BatchMix = "none"  # training-time batch mixing (50/50)
    batch_mix_alpha: float = 1.0  # Beta(α, α) parameter of the mixing weight λ
    random_crop_padding: int = 4  # pixels of zero padding before the random crop back to size; 0 disables
    horizontal_flip: bool = True  # flip half of the images left-right
    bf16: bool = True  # bf16 autocast (CUDA only; the CPU path stays fp32)
    channels_last: bool = True  # training batches in channels_last layout (CUDA, and the CPU: oneDNN's pooling and
    # batch norm are ~1.5× faster on it for the small CNN); on CUDA the weights too
    compile: bool = False  # torch.compile the model (CUDA only)
    eval_batch_size: int = 1024  # images per forward pass when predicting or extracting features (on the CPU at
    # most 128: classify.train.CPU_EVAL_BATCH)
    # a resumable checkpoint every N epochs of either stage and after its last (given a folder); 0: never;
    # "auto": about four per stage, every ⌈epochs / 4⌉ epochs (CHECKPOINTS_PER_STAGE)
    checkpoint_every_epochs: int | Literal["auto"] = "auto"
    synthetic_weight: float = 1.0  # loss weight of a generated image (real: 1); 0 ignores them in the loss
    prior: Literal["train", "real"] = "train"  # balanced_softmax's class counts: all training images | real ones only
    head_retrain_epochs: int = 0  # cRT: epochs of re-training a fresh head on class-balanced real images; 0: off
    head_retrain_lr: float = 0.1  # start lr of that stage (per-step cosine to 0, no warmup)
    lr_reference_batch: int = 0  # lr, head_retrain_lr are for this many images per step, scaled ∝ batch; 0: as given
    cutout: int = 0  # side in pixels of the Cutout square zeroed in each training image; 0: off
    ema_decay: float = 0.0  # EMA of the weights, updated every step, is the trained model (BN buffers copied); 0: off
    sync_batchnorm: bool = False  # DDP only: batch norm over the global batch (nn.SyncBatchNorm, CUDA only)
    feature_fill: FeatureFillConfig | None = None  # LDMLR: synthetic features for the head stage; null: off
    swap_share: float = 0.0  # Diff-Mix's per-sample swap: each step replaces a sample of class c by a generated one
    # with probability share·(1/(n_c+1))/max_k(1/(n_k+1)) (classify.swap; the pool is the method's fill, the set
    # its oversampled copies); 0: off
    soft_label_gamma: float | None = None  # Diff-Mix: an image translated from class a to class c at strength s is
    # trained on the label s^γ on c and 1 − s^γ on a (experiment.fills.fill_targets); 0 or null: hard labels

    def validate(self) -> None:
        backbone = check_model(self.model, current_path("model"))
        self.require(backbone or (self.pretrained is False and self.input_size is None), "pretrained",
                     f"false, and input_size null: {self.model} trains from scratch at the images' own size (use "
                     "timm/<model> or tv/<model> for a pretrained backbone)")
        self.require(self.finetune == "full" or self.pretrained is not False, "finetune",
                     "full when pretrained is false (a linear probe of random features learns nothing)")
        if self.finetune == "linear-probe":  # each input's features are computed once (classify.feature_memo)
            self.require(self.random_crop_padding == 0 and self.cutout == 0 and self.batch_mix == "none",
                         "finetune", "full, or linear-probe with random_crop_padding 0, cutout 0 and batch_mix "
                         "none (a probe computes each image's features once; a flip is kept as a second entry)")
        self.require(self.input_size is None or self.input_size >= 1, "input_size", "a positive side or null")
        self.require(0 <= self.backbone_lr_factor < math.inf, "backbone_lr_factor", "a finite factor ≥ 0")
        self.require(self.finetune != "head-then-full" or 1 <= self.head_epochs < self.epochs, "head_epochs",
                     "in [1, epochs) with finetune head-then-full")
        if isinstance(self.pretrained, str) and not self.pretrained:
            raise DiffbalanceError(f"{current_path('pretrained')} is an empty path", "pass true, false or a file")
        self.require(self.epochs >= 1, "epochs", "at least 1")
        self.require(self.batch_size >= 2, "batch_size", "at least 2 (batch norm needs two images)")
        self.require(self.lr > 0, "lr", "positive")
        self.require(0 <= self.momentum < 1, "momentum", "in [0, 1)")
        self.require(not self.nesterov or self.momentum > 0, "nesterov", "False when momentum is 0")
        self.require(self.weight_decay >= 0, "weight_decay", "0 or more")
        self.require(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", "in [0, epochs]")
        self.require(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        self.require(self.batch_mix_alpha > 0, "batch_mix_alpha", "positive")
        self.require(self.random_crop_padding >= 0, "random_crop_padding", "0 or more")
        self.require(self.eval_batch_size >= 1, "eval_batch_size", "at least 1")
        self.require(self.checkpoint_every_epochs == "auto" or self.checkpoint_every_epochs >= 0,
                     "checkpoint_every_epochs", "0 or more, or auto")
        self.require(0 <= self.synthetic_weight < math.inf, "synthetic_weight", "a finite number, 0 or more")
        # plain CE has no prior: a "real" prior there would be silently ignored, so it is refused
        self.require(self.prior == "train" or self.loss == "balanced_softmax", "prior",
                     "'train' unless loss is balanced_softmax (only that loss uses a class prior)")
        self.require(self.head_retrain_epochs >= 0, "head_retrain_epochs", "0 or more")
        self.require(0 < self.head_retrain_lr < math.inf, "head_retrain_lr", "positive")
        self.require(self.lr_reference_batch >= 0, "lr_reference_batch", "0 (lr as given) or a batch size")
        self.require(self.cutout >= 0, "cutout", "0 (off) or a side in pixels")
        self.require(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1) (0: off)")
        self.require(0 <= self.swap_share <= 1, "swap_share", "in [0, 1] (0: off)")
        self.require(self.soft_label_gamma is None or 0 <= self.soft_label_gamma < math.inf, "soft_label_gamma",
                     "a finite γ ≥ 0 (0: hard labels), or null")
        self.require(self.soft_label_gamma in (None, 0) or self.batch_mix == "none", "soft_label_gamma",
                     "null when batch_mix is on (batch mixing draws its own soft labels)")
        if self.feature_fill is not None and self.head_retrain_epochs == 0:  # the fill feeds stage 2 only
            raise DiffbalanceError(f"{current_path('feature_fill')} is set, but head_retrain_epochs is 0 (the "
                                   "synthetic features feed the head re-training stage only)",
                                   "set head_retrain_epochs (e.g. 10), or remove feature_fill")

    def checkpoint_every(self, stage_epochs: int) -> int:
        """Epochs between the checkpoints of a stage of `stage_epochs` epochs; 0: no checkpoints."""
        if self.checkpoint_every_epochs == "auto":
            return max(1, math.ceil(stage_epochs / CHECKPOINTS_PER_STAGE))
        return self.checkpoint_every_epochs


CHECKPOINTS_PER_STAGE = 4  # checkpoint_every_epochs "auto": about this many per stage (one write ≈ the weights' size)

# The fast CIFAR recipe (issue #12): large batch with the lr scaled linearly from 0.1 per 128 images (0.4 at 512),
# a short warmup then per-step cosine, Nesterov SGD, label smoothing 0.1 (Szegedy et al. 2016), crop + flip; bf16 and
# channels_last on CUDA. Cutout and EMA stay off: at ~35 epochs with the lr annealed to 0 they are regularisers of
# longer runs; set cutout (8–16 px at 32×32) or ema_decay (0.999) on top when a study wants them.
FAST_RECIPE: dict[str, Any] = {
    "epochs": 35,
    "batch_size": 512,
    "lr": 0.1,
    "lr_reference_batch": 128,
    "schedule": "cosine",
    "warmup_epochs": 2.0,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "label_smoothing": 0.1,
    "random_crop_padding": 4,
    "horizontal_flip": True,
    "bf16": True,
    "channels_last": True,
}
