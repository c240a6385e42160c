"""The one image-set type every stage passes around: in memory (a uint8 tensor), or on disk for sets larger than
memory (`data.store.StoredImages`, read by index; subsets and joins are index views)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diffbalance.data.store import StoredImages
from diffbalance.infra.errors import DiffbalanceError, DiffbalanceTypeError, require_type


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images with integer labels.

    images: uint8 tensor (N, C, H, W), C = 1 (grayscale) or 3 (RGB), on the CPU — or `StoredImages` (the same
        shape, read from disk by index: `images[idx]` is a tensor of those images).
    labels: int64 tensor (N,), values in [0, num_classes).
    class_names: one name per class index; the number of classes is len(class_names).
    source: where the images came from (a path, "cifar10:train", "mixup fill", ...).
    """

    images: torch.Tensor | StoredImages
    labels: torch.Tensor
    class_names: tuple[str, ...]
    source: str = ""
    meta: dict = field(default_factory=dict)  # free-form provenance (e.g. profile, kept indices)

    def __post_init__(self):
        require_type(self.images, (torch.Tensor, StoredImages), "images", "a uint8 torch tensor (N, C, H, W)")
        require_type(self.labels, torch.Tensor, "labels", "an int64 torch tensor (N,)")
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DiffbalanceError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                                   f"{tuple(self.images.shape)}", "pass uint8 pixels, or use ImageSet.from_arrays")
        if self.images.shape[1] not in (1, 3):
            raise DiffbalanceError(f"images must have 1 or 3 channels, got {self.images.shape[1]}",
                                   "pass grey (1) or RGB (3) images")
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise DiffbalanceError(f"labels must be (N,) with N = {len(self.images)}, got {tuple(self.labels.shape)}",
                                   "pass one label per image")
        if self.labels.is_floating_point() or self.labels.dtype == torch.bool:
            raise DiffbalanceTypeError(f"labels must be integer class indices, got {self.labels.dtype}",
                                       "pass an int64 tensor of class indices")
        object.__setattr__(self, "labels", self.labels.to(torch.int64))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DiffbalanceError(f"labels outside [0, {len(self.class_names)})",
                                   "give every class index a name in class_names")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def stored(self) -> bool:
        """Whether the images are read from disk (data.store) rather than held in memory."""
        return isinstance(self.images, StoredImages)

    def counts(self) -> list[int]:
        """Images per class, indexed by class."""
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def class_images(self, class_index: int) -> torch.Tensor:
        return self.images[self.labels == class_index]

    def subset(self, indices: torch.Tensor | list[int], source: str | None = None) -> ImageSet:
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = self.images.take(idx) if self.stored else self.images[idx]  # a stored set: an index view
        return ImageSet(images, self.labels[idx], self.class_names, source or self.source, dict(self.meta))

    def concat(self, other: ImageSet, source: str | None = None) -> ImageSet:
        if other.class_names != self.class_names:
            raise DiffbalanceError("cannot join image sets with different classes", "use the same class list")
        if other.images.shape[1:] != self.images.shape[1:]:
            raise DiffbalanceError(
                f"cannot join images of shape {tuple(self.images.shape[1:])} and {tuple(other.images.shape[1:])}",
                "resize both sets to the same size",
            )
        joined = (StoredImages.of(self.images).concat(other.images) if self.stored or other.stored
                  else torch.cat([self.images, other.images]))
        return ImageSet(
            joined,
            torch.cat([self.labels, other.labels]),
            self.class_names,
            source or f"{self.source} + {other.source}",
            dict(self.meta),
        )

    def class_index(self, name_or_index: str | int) -> int:
        """Class index from a name or an index; unknown classes are a one-line error."""
        if isinstance(name_or_index, int) or str(name_or_index).isdigit():
            i = int(name_or_index)
            if 0 <= i < self.num_classes:
                return i
        elif name_or_index in self.class_names:
            return self.class_names.index(name_or_index)
        raise DiffbalanceError(
            f"unknown class {name_or_index!r}", f"use one of {', '.join(self.class_names)} (or an index)"
        )

    @classmethod
    def from_arrays(cls, X, y, class_names=None, source: str = "arrays",
                    contiguous: bool = True) -> tuple[ImageSet, str]:
        """Build from numpy/torch arrays (or nested lists) N×H×W×C, N×C×H×W or N×H×W (grayscale).

        Returns the set and the layout ("NHWC", "NCHW" or "NHW") so results can be given back the same way.
        y is read as imbalanced-learn reads it (`class_labels`). Pixel values by dtype (`uint8_pixels`): uint8 as
        they are; other integers must lie in 0–255; bool is 0/255; floats must be finite and in [0, 1], scaled by
        255 and rounded. Anything else is a one-line error.

        `contiguous=False` leaves the images a (N, C, H, W) view of X's uint8 pixels (strided for N×H×W×C input,
        no copy), for callers that only index them; `to_layout(layout)` then gives those pixels back as they are.
        """
        y_np = class_labels(y)
        pixels = uint8_pixels(_as_numpy(X))
        x = torch.from_numpy(pixels)
        if x.ndim == 3:
            layout, x = "NHW", x[:, None]
        elif x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
            layout = "NCHW"
        elif x.ndim == 4 and x.shape[-1] in (1, 3):
            layout, x = "NHWC", x.permute(0, 3, 1, 2)
        else:
            raise DiffbalanceError(
                f"X has shape {tuple(x.shape)}", "pass images as N×H×W×C, N×C×H×W or N×H×W with 1 or 3 channels"
            )
        if 0 in x.shape[2:]:
            raise DiffbalanceError(f"X has shape {pixels.shape}: images of 0 pixels",
                                   "pass images of at least 1×1 pixel")
        if len(y_np) != len(x):
            raise DiffbalanceError(f"y has shape {np.shape(y_np)}, X has {len(x)} images", "pass one label per image")
        # classes are the sorted distinct label values, as in imbalanced-learn; meta keeps them to map back
        values, labels = np.unique(y_np, return_inverse=True)
        names = tuple(str(v) for v in values) if class_names is None else tuple(class_names)
        if len(names) != len(values):
            raise DiffbalanceError(
                f"{len(names)} class names for {len(values)} distinct labels", "pass one name per class"
            )
        meta = {"label_values": values.tolist()}
        return cls(x.contiguous() if contiguous else x, torch.as_tensor(labels), names, source, meta), layout

    def to_layout(self, layout: str) -> torch.Tensor:
        """The images as (N, H, W, C), (N, C, H, W) or (N, H, W) for layout "NHWC", "NCHW" or "NHW": views, except
        that N×H×W×C is made contiguous (a no-op for the view `from_arrays(contiguous=False)` made of such input)."""
        if layout == "NHW":
            return self.images[:, 0]
        if layout == "NHWC":
            return self.images.permute(0, 2, 3, 1).contiguous()
        return self.images


def class_labels(y) -> np.ndarray:
    """y as a 1-D array of class labels, checked as imbalanced-learn checks it (scikit-learn's `type_of_target`):
    binary or multiclass labels (integers, strings, integral floats); a column vector (N, 1) is read as (N,).
    Continuous, multilabel (one-hot included), multioutput, mixed-type and missing y are one-line errors."""
    from sklearn.utils.multiclass import type_of_target  # here: `import diffbalance` stays fast

    fix = "pass one class label per image (integers or strings; a one-hot y as y.argmax(1))"
    if y is None:
        raise DiffbalanceError("fit_resample requires y to be passed, but the target y is None", fix)
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y
    try:
        kind = type_of_target(y, input_name="y")
    except ValueError as err:  # NaN, complex, a bare string, ...
        raise DiffbalanceError(f"y cannot be read as class labels ({' '.join(str(err).split())[:160]})", fix) from None
    if kind in ("continuous", "unknown"):
        what = "non-integral numbers" if kind == "continuous" else "values of mixed or unreadable types"
        raise DiffbalanceError(f"Unknown label type {kind!r}: y holds {what}, not class labels", fix)
    if kind not in ("binary", "multiclass"):
        raise DiffbalanceError(f"y has shape {np.shape(y)} ({kind}): multilabel and multioutput targets are not "
                               "supported", fix)
    return np.asarray(y).reshape(-1)


def _as_numpy(X) -> np.ndarray:
    """A numpy view of X (numpy, torch on any device, nested lists); ragged or sparse input is a one-line error."""
    if hasattr(X, "toarray") or hasattr(X, "todense"):  # scipy.sparse: np.asarray would make a 0-d object array
        raise DiffbalanceError(f"X is a sparse {type(X).__name__}; images are dense",
                               "pass dense image arrays (e.g. X.toarray())")
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu()
        X = X.float() if X.dtype in (torch.bfloat16, torch.float16) else X  # numpy has no bfloat16
        return X.numpy()
    try:
        return np.asarray(X)
    except ValueError:  # numpy refuses ragged lists
        raise DiffbalanceError("X holds images of different shapes", "resize them to one size first") from None


def uint8_pixels(x: np.ndarray) -> np.ndarray:
    """Pixel values as uint8, checked per dtype: integers outside 0–255 would wrap and NaN would become 0, so both
    are errors rather than silently mangled images."""
    kind = x.dtype.kind
    if kind == "b":
        return x.astype(np.uint8) * np.uint8(255)  # a binary image: False black, True white (PIL mode "1")
    if x.dtype == np.uint8:
        return x
    if kind in "iu":
        if x.size and (int(x.min()) < 0 or int(x.max()) > 255):
            raise DiffbalanceError(
                f"integer images must lie in 0–255, X ({x.dtype}) spans {int(x.min())}–{int(x.max())}",
                "scale them to 0–255 (16-bit: round(x / 257)) or pass floats in [0, 1]",
            )
        return x.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(x).all():
            raise DiffbalanceError(f"X holds {int((~np.isfinite(x)).sum())} NaN or infinite value(s)",
                                   "replace or drop those images (e.g. np.nan_to_num) first")
        if x.size and (float(x.min()) < 0 or float(x.max()) > 1):
            raise DiffbalanceError(f"float images must lie in [0, 1], X spans {float(x.min()):g}–{float(x.max()):g}",
                                   "scale them to [0, 1] or pass uint8")
        return np.rint(x.astype(np.float64) * 255).astype(np.uint8)
    raise DiffbalanceError(
        f"X has dtype {x.dtype}, not a pixel type", "pass uint8, integers in 0–255 or floats in [0, 1]"
    )
