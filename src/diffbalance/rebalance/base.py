"""One interface for every rebalancer (none, oversampling, Mixup, CutMix, CFG, text-to-image), in imbalanced-learn's
shape: `__init__` and `set_params` store parameters only (sklearn's `get_params`/`set_params`, so `sklearn.base.clone`,
`GridSearchCV` and the sweep work); the parameters are checked where imbalanced-learn checks them, when the work
starts (`fit_resample`, `fit`, `plan`: `_validate_params`), and by `build_rebalancer` for a config's key path;
`sampling_strategy` is the one answer to "how many images to make", and the base runs the per-class loop.

    reb = MixupFill(alpha=1.0, random_state=0)
    X_res, y_res = reb.fit_resample(X, y)        # X: N×H×W×C, N×C×H×W or N×H×W; numpy or torch
    reb.sampling_strategy_                         # {class index: images added}

A subclass implements `generate(class_index, seeds)` (image k from seeds[k] alone) and, when it needs more than
the real images, `prepare(train, device, workdir)`. Writing to disk and resuming is `rebalance.store.fill`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator

from diffbalance.infra.configs import at_path, coerce_fields, require, to_plain
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import entry_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.imbalance.targets import generation_counts
from diffbalance.infra.paths import cache_dir
from diffbalance.infra.registry import Registry
from diffbalance.infra.seeding import derive_seeds

# image i of class c, its seed and the method's record
Batch = tuple[int, list[int], torch.Tensor, list[dict[str, Any]]]


@dataclasses.dataclass(kw_only=True, repr=False, eq=False)
class Rebalancer(BaseEstimator, ABC):
    """Base of all rebalancers. Subclasses are dataclasses whose fields are their parameters, checked from their
    annotations (`Literal[...]` for choices) and by `validate()` when the work starts; fitted state ends in `_`
    (`train_`, `device_`)."""

    name: ClassVar[str]
    generative: ClassVar[bool] = False  # True for methods that synthesise images with a learned model
    copies_only: ClassVar[bool] = False  # True for methods whose every image is a copy of a real one (`copy_sources`)
    _estimator_type: ClassVar[str] = "sampler"  # imbalanced-learn's mark of a sampler (its Pipeline, its checks)

    sampling_strategy: str | float | dict = "auto"  # images per class after filling (imbalance.targets)
    random_state: int = 0  # base seed; image i of class c uses derive_seed(random_state, c, i)
    batch_size: int = 256  # images generated per call of `generate`
    device: str | torch.device = "auto"  # where the work runs: auto | cpu | cuda | cuda:N | a torch.device

    def _validate_params(self, path: str = "") -> None:
        """Check every parameter, the one place it is done: types and choices from the annotations (converting where
        they say so, e.g. 1 → 1.0, a mapping → its config section, as `build_rebalancer` does), then `validate()`.
        Messages name `path` (a config's key path) or the rebalancer. Run by `plan`, so by `fit`, `fit_resample` and
        every fill; `__init__` and `set_params` only store (scikit-learn's and imbalanced-learn's rule)."""
        with at_path(path or f"rebalancer {self.name}"):
            coerce_fields(self)
            self.validate()

    def validate(self) -> None:
        """Range checks of the parameters (types and choices are checked from the annotations); subclasses extend it
        with `super().validate()`. Called by `_validate_params`, never by hand."""
        require(self.batch_size >= 1, "batch_size", self.batch_size, "at least 1")

    def __sklearn_tags__(self):
        """The tags of imbalanced-learn's samplers (`SamplerMixin`/`BaseSampler`: estimator type "sampler", y
        required, its `sampler_tags` when imbalanced-learn is installed), for image arrays: X is 3-D or 4-D, never a
        2-D table, sparse or a data frame."""
        tags = super().__sklearn_tags__()
        try:
            from imblearn.utils._tags import InputTags, SamplerTags, Tags
        except ImportError:  # imbalanced-learn is optional: scikit-learn's tags carry the type alone
            pass
        else:
            fields = {f.name: getattr(tags, f.name) for f in dataclasses.fields(tags)}
            tags = Tags(**{**fields, "input_tags": InputTags(**{f.name: getattr(tags.input_tags, f.name)
                                                                for f in dataclasses.fields(tags.input_tags)}),
                           "sampler_tags": SamplerTags()})
        tags.estimator_type = "sampler"
        tags.target_tags.required = True
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    # --- what a rebalancer implements ------------------------------------------------------------
    def check(self) -> None:
        """Check, before anything is written, what can be checked without the training data: files, model ids,
        step counts. Raises a one-line DiffbalanceError. Default: nothing beyond the parameters."""

    def check_data(self, train: ImageSet) -> None:
        """Check what needs the training data but no fitting (a checkpoint that matches it, a class to translate
        from), before a fill writes anything. Raises a one-line DiffbalanceError. Default: nothing."""

    def prepare(self, train: ImageSet, device: torch.device, workdir: Path) -> None:
        """Fit whatever the method needs on the (imbalanced) training set. Default: keep the real images."""
        self.train_ = train
        self.device_ = device

    def trained_checkpoint(self, train: ImageSet, workdir: Path, device: torch.device | str = "auto") -> Path | None:
        """The model folder a fill of `train` would use, trained into `workdir` if needed (methods that train a
        generator); None for methods without one. Cross-validation shares it across folds this way."""
        return None

    @abstractmethod
    def generate(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Return uint8 images (len(seeds), C, H, W) of class `class_index` on the CPU — image k made from
        seeds[k] alone — and one JSON-able record per image (e.g. the source indices, λ, the prompt)."""

    def make_images(self, class_index: int, seeds: Sequence[int]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """The images of `seeds` as a fill makes them: `generate` (generative methods mix in copies here)."""
        return self.generate(class_index, seeds)

    def copy_sources(self, class_index: int, seeds: Sequence[int]) -> torch.Tensor:
        """Only for `copies_only` methods: (len(seeds),) training-set indices of the real images that the images of
        `seeds` are exact copies of (what `generate` returns, as indices), so `fit_resample` gathers them from X."""
        raise NotImplementedError(f"{self.name} makes new images, not only copies of real ones")

    # --- imbalanced-learn's contract ---------------------------------------------------------------
    def plan(self, data: ImageSet) -> dict[int, int]:
        """`sampling_strategy_`: images to add per class index (only classes that get some). Pure: no fitting. The
        first step of every entry point (`fit`, `fit_resample`, a fill), so it checks the parameters."""
        self._validate_params()
        add = self.images_to_add(data.counts(), data.class_names)
        self.sampling_strategy_ = {c: n for c, n in enumerate(add) if n > 0}
        return self.sampling_strategy_

    def images_to_add(self, counts: Sequence[int], class_names: Sequence[str]) -> list[int]:
        """Per class, how many images `sampling_strategy` asks for; the one place that decides it."""
        return generation_counts(counts, self.sampling_strategy, class_names)

    def fit(self, data: ImageSet, workdir: Path | str | None = None) -> Rebalancer:
        """Plan the counts and prepare the method on `data`. `workdir` holds what the method trains (a generator);
        None uses the cache folder, so fitting again on the same data reuses it."""
        self.plan(data)
        self.check_data(data)
        self.device_ = entry_device(self.device)
        self.prepare(data, self.device_, Path(workdir) if workdir is not None else cache_dir("work", self.name))
        return self

    def image_seeds(self, class_index: int, indices: Sequence[int]) -> list[int]:
        """The seed of image i of class c, for each i in `indices`: derive_seed(random_state, c, i), whatever the
        batch it is made in."""
        return derive_seeds((self.random_state, class_index), indices)

    def iter_batches(self, todo: Mapping[int, Sequence[int]]) -> Iterator[Batch]:
        """Make image i of class c for every (c, [i, ...]) in `todo`, `batch_size` images per call, one class per
        batch; image i of class c always comes from seed derive_seed(random_state, c, i). Needs `fit` first."""
        for c, indices in todo.items():
            indices = list(indices)
            for k in range(0, len(indices), self.batch_size):
                chunk = indices[k : k + self.batch_size]
                seeds = self.image_seeds(c, chunk)
                images, records = self.make_images(c, seeds)
                if images.dtype != torch.uint8 or len(images) != len(chunk) or len(records) != len(chunk):
                    raise RuntimeError(f"{self.name}.generate returned {images.dtype} {tuple(images.shape)} "
                                       f"for {len(chunk)} seeds")
                yield c, chunk, images.cpu(), [{"class_index": c, "index": i, "seed": s, **r}
                                               for i, s, r in zip(chunk, seeds, records)]

    def fit_resample(self, X, y, workdir: Path | str | None = None):
        """imbalanced-learn's API on image arrays: (X_res, y_res) = the inputs, unchanged and in their own dtype,
        followed by the new images in the inputs' layout, dtype and label values (numpy in → numpy out, torch in →
        torch out, a list → a list, as imbalanced-learn returns them). Float inputs are taken as [0, 1]; new images
        are returned in that range. y is checked as imbalanced-learn checks it (`ImageSet.from_arrays`): class labels
        of at least 2 classes; a column vector (N, 1) comes back as (N,).

        A `copies_only` method (oversample) makes no image tensors: its copies are gathered from X's own pixels, in
        X's layout, in one step, straight into the output (the same images as its `generate`)."""
        data, layout = ImageSet.from_arrays(X, y, contiguous=not self.copies_only)  # copies only index the pixels
        if len(data) == 0:
            raise DiffbalanceError("X holds no images", "pass at least one image of each of 2 or more classes")
        if data.num_classes < 2:
            raise DiffbalanceError(f"y holds one class ({data.class_names[0]!r}): a sampler needs at least 2 classes "
                                   "to balance", "pass the images of every class")
        self.fit(data, workdir)
        todo = {c: range(n) for c, n in self.sampling_strategy_.items()}
        if not todo:
            return X, _flat(y)
        if self.copies_only:
            rows = torch.cat([self.copy_sources(c, self.image_seeds(c, indices)) for c, indices in todo.items()])
            new = data.to_layout(layout)  # X's uint8 pixels in X's layout (a view: no copy)
            labels = torch.repeat_interleave(torch.tensor(list(todo)), torch.tensor([len(i) for i in todo.values()]))
        else:
            batches = list(self.iter_batches(todo))
            images = torch.cat([b[2] for b in batches])
            labels = torch.tensor([c for c, idx, _, _ in batches for _ in idx])
            new, rows = ImageSet(images, labels, data.class_names).to_layout(layout), None  # uint8, X's layout
        values = np.asarray(data.meta["label_values"])[labels.numpy()]
        return _append(X, _flat(y), new, rows, values)

    # --- records ------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Parameters as plain JSON-able data (nested config sections as dicts), for fill.json and the reports."""
        return to_plain(self.get_params(deep=False))


def _append(X, y, new: torch.Tensor, rows: torch.Tensor | None, values: np.ndarray):
    """(X, y) followed by the new images — the uint8 images `new` (in X's layout), or its `rows` when given — and
    their label values, in the inputs' own kind (torch, numpy, a list), dtype and device; float X is taken as
    [0, 1]. A numpy result is allocated once and the new images written into it (no concatenated temporaries)."""
    if isinstance(X, torch.Tensor):
        new = new if rows is None else new[rows]
        new = new.float().div(255).to(X.dtype) if X.dtype.is_floating_point else new.to(X.dtype)
        y_in = torch.as_tensor(y)
        return torch.cat([X, new.to(X.device)]), torch.cat([y_in, torch.as_tensor(values).to(y_in)])
    x_in, y_in = np.asarray(X), np.asarray(y)
    X_res = np.empty((len(x_in) + len(values), *x_in.shape[1:]), x_in.dtype)  # (N + M, ...), X's layout and dtype
    X_res[: len(x_in)] = x_in
    tail = X_res[len(x_in) :]
    if rows is not None and tail.dtype == np.uint8:
        torch.index_select(new, 0, rows, out=torch.from_numpy(tail))  # the gather writes straight into the result
    elif np.issubdtype(x_in.dtype, np.floating):
        tail[...] = (new if rows is None else new[rows]).numpy() / 255
    else:
        tail[...] = (new if rows is None else new[rows]).numpy()
    y_res = np.concatenate([y_in, values.astype(y_in.dtype)])
    return (X_res.tolist() if isinstance(X, list) else X_res), (y_res.tolist() if isinstance(y, list) else y_res)


def _flat(y):
    """y with a column vector (N, 1) read as (N,), in its own kind (list, numpy, torch), as imbalanced-learn
    returns it; any other y as it is."""
    if (y.ndim if hasattr(y, "ndim") else np.ndim(y)) != 2:
        return y
    return y.reshape(-1) if hasattr(y, "reshape") else np.ravel(y).tolist()


# parameters every rebalancer has that are set once for all methods, never per method: name → (experiment config
# key, `diffbalance rebalance` option). The one table of the names a parameter goes by.
SET_ONCE = {"sampling_strategy": ("sampling_strategy", "--sampling-strategy"), "random_state": ("fill_seed", "--seed"),
            "device": ("device", "--device")}


# --- registry: every method registers itself in its module (`infra.registry`); looked up through rebalance.registry
# The built-ins are found on the first lookup: the modules below, and `rebalancer.py` of every subpackage of
# diffbalance.generate — a new generative method is that one module.
REBALANCERS: Registry[type[Rebalancer]] = Registry(
    "rebalancer", modules=("diffbalance.rebalance.oversample", "diffbalance.rebalance.mixing"),
    discover=("diffbalance.generate.*.rebalancer",), plugins="diffbalance.rebalancers")


def register(cls: type[Rebalancer] | None = None, /, *, tiny: Mapping[str, Any] | None = None,
             bad: Mapping[str, Any] | None = None,
             sweep_knobs: tuple[str, ...] = ()) -> Any:
    """Class decorator, bare (`@register`) or with metadata: register a Rebalancer under its `name`, its help the
    first line of its docstring.
      tiny         parameters that make it CPU-fast on 8×8 images (the contract test runs every rebalancer with
                   them); a value "fixture:NAME" is the test fixture NAME (a tiny model the suite builds)
      bad          one bad parameter of its own (the contract test expects a one-line error naming it)
      sweep_knobs  the knobs experiment.sweep may choose for it (guidance_w, sampler, init, strength, …)
    and, from the class, `generative` (it synthesises images with a learned model)."""

    def add(c: type[Rebalancer]) -> type[Rebalancer]:
        return REBALANCERS.register(tiny=dict(tiny or {}), bad=dict(bad or {"batch_size": 0}),
                                    sweep_knobs=tuple(sweep_knobs), generative=bool(c.generative))(c)

    return add if cls is None else add(cls)
