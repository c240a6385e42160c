"""One interface for every rebalancer (none, oversampling, Mixup, CutMix, CFG, text-to-image).

A rebalancer makes `generate(class_index, seeds)` images of one class, one per seed. Everything else —
which images are missing, batching, per-image seeds, writing PNGs and a manifest, resuming — lives in
`rebalance.store.fill`, so the experiment runner never needs to know which kind it drives.

For notebook users every rebalancer is also an imbalanced-learn-style sampler:

    X_res, y_res = MixupFill(alpha=1.0, random_state=0).fit_resample(X, y)   # X: N×H×W×C or N×C×H×W
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.device import resolve_device
from diffbalance.errors import DiffbalanceError


@dataclasses.dataclass(kw_only=True)
class Rebalancer(ABC):
    """Base of all rebalancers. Subclasses are dataclasses whose fields are their parameters only
    (imbalanced-learn's rule: `__init__` stores parameters, `prepare` does the work)."""

    name: ClassVar[str]
    generative: ClassVar[bool] = False  # True for methods that synthesise images with a learned model

    sampling_strategy: str | float | dict = "auto"  # how many to add per class (imbalance.targets)
    random_state: int = 0  # base seed; image i of class c uses derive_seed(random_state, c, i)
    batch_size: int = 256  # images generated per call of `generate`
    device: str = "auto"  # where the work runs

    # --- the two methods a rebalancer implements -------------------------------------------------
    def prepare(self, train: ImageSet, device: torch.device, workdir: Path | None = None) -> None:
        """Fit whatever the method needs on the (imbalanced) training set. Default: keep the real images."""
        self.train_ = train
        self.device_ = device

    @abstractmethod
    def generate(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Return uint8 images (len(seeds), C, H, W) of class `class_index` on the CPU — image k made from
        seeds[k] alone — and one JSON-able record per image (e.g. the source indices, λ, the prompt)."""

    # --- shared --------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Parameters as given (for the manifest and the resolved config)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def fit_resample(self, X, y):
        """imbalanced-learn's API on image arrays: returns (X_res, y_res), the inputs followed by the new images,
        in the layout and label values of the inputs (numpy in → numpy out, torch in → torch out)."""
        from diffbalance.imbalance.targets import generation_counts
        from diffbalance.rebalance.store import generate_in_memory

        data, layout = ImageSet.from_arrays(X, y)
        add = generation_counts(data.counts(), self.sampling_strategy, data.class_names)
        self.prepare(data, resolve_device(self.device))
        out = data.concat(generate_in_memory(self, data, add, progress=False))
        images = out.to_layout(layout)
        values = np.asarray(data.meta["label_values"])[out.labels.numpy()]
        x_in = X if isinstance(X, torch.Tensor) else np.asarray(X)
        if (x_in.dtype.is_floating_point if isinstance(x_in, torch.Tensor) else np.issubdtype(x_in.dtype, np.floating)):
            images = images.float() / 255
        if isinstance(X, torch.Tensor):
            return images.to(X.dtype), torch.as_tensor(values)
        return images.numpy().astype(x_in.dtype), values


# --- registry --------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Rebalancer]] = {}
# generative methods import heavy libraries (diffusers); their modules are imported on first use
_LAZY_MODULES = {
    "cfg": "diffbalance.generate.cfg.rebalancer",
    "ldm": "diffbalance.generate.text2image.rebalancer",
    "ldm-img2img": "diffbalance.generate.text2image.rebalancer",
}
_BUILTIN_MODULES = ("diffbalance.rebalance.oversample", "diffbalance.rebalance.mixing")


def register(cls: type[Rebalancer]) -> type[Rebalancer]:
    _REGISTRY[cls.name] = cls
    return cls


def _import_builtins() -> None:
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_rebalancers() -> list[str]:
    _import_builtins()
    return sorted(set(_REGISTRY) | set(_LAZY_MODULES))


def rebalancer_class(name: str) -> type[Rebalancer]:
    import importlib

    _import_builtins()
    if name not in _REGISTRY and name in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[name])
    if name not in _REGISTRY:
        raise DiffbalanceError(f"unknown rebalancer {name!r}", f"use one of {', '.join(available_rebalancers())}")
    return _REGISTRY[name]


def build_rebalancer(name: str, params: Mapping[str, Any] | None = None) -> Rebalancer:
    """Instantiate a registered rebalancer; unknown parameters are a one-line error."""
    cls = rebalancer_class(name)
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise DiffbalanceError(
            f"rebalancer {name} has no parameter {', '.join(unknown)}", f"use only {', '.join(sorted(known))}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        raise DiffbalanceError(f"bad parameters for rebalancer {name}: {err}", "check the method's options") from None
