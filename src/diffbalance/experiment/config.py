"""The experiment config: one typed tree of frozen sections, validated on load and saved before work starts.

A config file is YAML (or JSON) with the sections below; unknown keys, wrong types and bad values are one-line
errors naming the key path (`methods[3].params.guidance_w`), so a typo never silently falls back to a default.
Presets (`demo`, `paper-cifar10`) are such files shipped in `diffbalance/presets/`.

Classifier recipes are resolved when the file is read: `train` is the full recipe, and each method's `train` (and
`reference_train`) is that recipe with the method's own overrides applied, so the saved config says exactly what
every run used, and reading a saved config back gives the same tree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from diffbalance.classify.config import ModelName, TrainConfig, check_model
from diffbalance.infra.configs import Config, build, current_path, join, parse_fields
from diffbalance.data.sources import DataConfig
from diffbalance.infra.errors import DiffbalanceError, require_type
from diffbalance.infra.paths import plain_name
from diffbalance.infra.renames import renamed
from diffbalance.experiment.speed import ExpectedTime
from diffbalance.evaluate.fid.protocol import FidConfig
from diffbalance.experiment.filter import FilterConfig
from diffbalance.experiment.sweep import SweepConfig, choice_recipe, with_classifier
from diffbalance.imbalance.subset import ImbalanceConfig
from diffbalance.imbalance.targets import STRATEGIES
from diffbalance.imbalance.validation import ValidationConfig
from diffbalance.presets import PRESETS
from diffbalance.rebalance.base import SET_ONCE
from diffbalance.rebalance.registry import (build_rebalancer, generative_rebalancers, sweep_knobs,
                                            sweepable_rebalancers)

# set once for the whole experiment (top-level keys), never per method
CEILING = "balanced-ceiling"  # the row trained on the original balanced set (`ceiling: true`)
RESULT_FREE = ("log_dir", "expected_time", "replicate")  # keys that change no result: a run resumed with other values keeps its runs


@dataclass(frozen=True)
class ClassifierConfig(Config):
    """A classifier of the comparison with a recipe of its own, e.g. a frozen pretrained backbone beside a CNN
    trained from scratch on the same fills: `{name: inception-probe, model: inception-v3-fid, train: {pretrained:
    true, finetune: linear-probe, input_size: 75}}`. Its `train` goes on top of each method's recipe in its runs."""
    model: ModelName  # a registered classifier, timm/<model> or tv/<model>
    name: str = ""  # the label in tables, results and run folders; "" = the model's name
    train: dict[str, Any] = field(default_factory=dict)  # recipe overrides for this classifier's runs

    def validate(self) -> None:
        check_model(self.model, current_path("model"))
        if not self.name:
            object.__setattr__(self, "name", self.model)
        TrainConfig.from_dict({**self.train, "model": self.model}, path=current_path("train"))


@dataclass(frozen=True)
class MethodConfig(Config):
    name: str  # label in tables and folder names, e.g. "cfg-w7.5"
    rebalancer: str = ""  # a registered rebalancer (none, oversample, mixup, cutmix, cfg, ldm, ldm-img2img); "" = name
    params: dict[str, Any] = field(default_factory=dict)  # the rebalancer's parameters (checked against it)
    train: TrainConfig = field(default_factory=TrainConfig)  # the classifier recipe of this method's runs
    filter: FilterConfig | None = None  # over-generate and keep the candidates a judge scores best (generative only)

    def validate(self) -> None:
        if not self.rebalancer:
            object.__setattr__(self, "rebalancer", self.name)


@dataclass(frozen=True)
class ReplicateConfig(Config):
    draws: int = 2  # fresh imbalanced draws the verdicts are re-tested on (experiment.replicate)
    seed: int = 1  # draw d's imbalance.seed is seed + d (the run's own draw keeps its seed)
    rotate: bool = True  # rotate the class order on each draw, so other classes are the rare ones

    def validate(self) -> None:
        self.require(self.draws >= 1, "draws", "a positive number of fresh draws")


@dataclass(frozen=True)
class ExperimentConfig(Config):
    name: str = "experiment"  # shown in the report title
    data: DataConfig = field(default_factory=DataConfig)  # which dataset and where it is
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)  # how the training set is cut
    validation: ValidationConfig | None = None  # how every choice is validated on training data: stratified K-fold
    # cross-validation (folds: K) or real images held out of the imbalanced set (per_class / fraction)
    # how many images per class after filling, for every method (imbalanced-learn's sampling_strategy): auto |
    # not majority | not minority | minority | all | a ratio in (0, 1] | {class: n}
    sampling_strategy: str | float | dict[int | str, int] = "auto"
    methods: tuple[MethodConfig, ...] = ()  # the rebalancing methods compared
    # the classifiers every method is trained with: a registered name (small_cnn, resnet18, timm/resnet50, …) or
    # {name, model, train} with a recipe of its own (ClassifierConfig); choices (sweep, row selection) use the first
    classifiers: tuple[ModelName | ClassifierConfig, ...] = field(default=("small_cnn",),
                                                                 metadata={"what": "classifier"})
    train: TrainConfig = field(default_factory=TrainConfig)  # the classifier recipe shared by all runs
    seeds: tuple[int, ...] = (0,)  # classifier seeds; every method × classifier is trained once per seed
    fill_seed: int = 0  # base seed of the fill images (the first classifier seed's fill, and the sweep's)
    fill_draws: Literal["per_seed", "shared"] = "per_seed"  # per_seed: every further classifier seed trains on its
    # own fill draw (per-image seeds derived from it), so the verdict's interval covers the fill's variance too;
    # shared: one fill for all seeds (cheaper; the interval then covers classifier seeds only)
    generator_seeds: bool = False  # with per_seed draws: every further seed's draw also comes from a generator of
    # its own (another training seed), so the interval covers the generator's training variance too (costly)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    consistency: bool = True  # label generated images with a reference classifier trained on balanced real data
    reference_train: TrainConfig = field(default_factory=TrainConfig)  # that reference classifier's recipe
    reference_images_per_class: int | None = None  # balanced real images per class for it (None = all)
    fid: FidConfig | None = None  # generation-quality section; None = skip
    # choose cfg methods' sampling knobs (w, sampler, init, strength, synthetic share) on validation accuracy: one
    # sweep section, or a list of them (one per tuned method); experiment.sweep
    sweep: tuple[SweepConfig, ...] | SweepConfig | None = None
    compare_with: tuple[str, ...] = ()  # methods every other method is compared with, paired by seed (e.g. oversample)
    grid_images_per_class: int = 8  # fill images per class in the report's sample grids
    ceiling: bool = False  # also train every classifier × seed on the original balanced training set (real images,
    # the validation part held out): the "balanced-ceiling" row every method is read against, never chosen
    parallel: Literal["auto", "runs", "ddp"] = "auto"  # under torchrun: spread whole classifier runs over the
    # ranks (runs), or train each run with DDP on all of them (ddp); auto = runs for images up to 64 px (CIFAR-scale
    # models, where whole runs scale linearly), ddp above
    log_dir: str | None = None  # TensorBoard event files of the training curves go here (needs the tensorboard
    # extra); None = off; changes no result; `diffbalance run --log-dir` overrides it
    replicate: ReplicateConfig | None = None  # after the run, re-test its verdicts on fresh draws of the data with
    # the chosen recipes frozen (experiment.replicate): RUN/replication/draw<d>, RUN/replication.json
    expected_time: ExpectedTime | None = None  # the wall time this config took on a CPU and that machine's speed:
    # `diffbalance run` prints the time it expects on this machine (experiment.speed); changes no result

    def classifier_names(self) -> list[str]:
        """The classifiers' labels, as tables, results and run folders name them."""
        return [c if isinstance(c, str) else c.name for c in self.classifiers]

    def run_recipe(self, train: TrainConfig, classifier: str) -> TrainConfig:
        """A method's recipe `train` for the runs of the classifier labelled `classifier` (its model and overrides)."""
        return with_classifier(train, self.classifiers[self.classifier_names().index(classifier)])

    def row_names(self) -> list[str]:
        """The rows of every table: the methods, then the ceiling row when there is one."""
        return [m.name for m in self.methods] + ([CEILING] if self.ceiling else [])

    def validate(self) -> None:
        self.require(len(self.methods) > 0, "methods", "a list of at least one method")
        names = [plain_name(m.name, "method") for m in self.methods]  # each becomes OUT/fills/<name>, …
        if len(set(names)) != len(names):
            raise DiffbalanceError(f"method names repeat: {names}", "give every method a distinct name")
        self.require(len(self.classifiers) > 0, "classifiers", "a list of at least one classifier")
        for i, spec in enumerate(self.classifiers):
            if isinstance(spec, str):
                check_model(spec, current_path(f"classifiers[{i}]"))
        labels = self.classifier_names()
        if len(set(labels)) != len(labels):
            raise DiffbalanceError(f"classifier names repeat: {labels}",
                                   "give the same model with two recipes distinct names ({name: …, model: …})")
        for i, spec in enumerate(self.classifiers):  # every run's recipe, checked now rather than after hours
            for m in self.methods:
                self.run_recipe(m.train, labels[i])
        if isinstance(self.sampling_strategy, str):
            self.require(self.sampling_strategy in STRATEGIES, "sampling_strategy",
                         f"one of {', '.join(STRATEGIES)}, a ratio or a mapping")
        elif isinstance(self.sampling_strategy, float):
            self.require(0 < self.sampling_strategy <= 1, "sampling_strategy", "a ratio n_class / n_majority in (0, 1]")
        self.require(len(self.seeds) > 0, "seeds", "a list of at least one seed")
        self.require(self.grid_images_per_class >= 0, "grid_images_per_class", "0 or more")
        unknown = [b for b in self.compare_with if b not in names]
        if unknown:
            raise DiffbalanceError(f"compare_with names {', '.join(unknown)}, not a method of this config",
                                   f"name one of: {', '.join(names)}")
        if isinstance(self.sweep, SweepConfig):  # one section is a list of one
            object.__setattr__(self, "sweep", (self.sweep,))
        if self.sweep:
            self._check_sweeps()
        if self.validation is not None and self.validation.cross_validated:
            filtered = [m.name for m in self.methods if m.filter is not None]
            if filtered:
                raise DiffbalanceError(f"method(s) {', '.join(filtered)} use a filter, which cross-validation does not "
                                       "score yet", "hold out a split instead (validation: {per_class: N})")
            TrainConfig.from_dict({**self.train.to_dict(), **self.validation.train}, path="validation.train")
        self.require(self.reference_images_per_class is None or self.reference_images_per_class >= 1,
                     "reference_images_per_class", "a positive count or null")

    def _check_sweeps(self) -> None:
        knobs = {m.name: sweep_knobs(m.rebalancer) for m in self.methods}
        sweepable = [name for name, declared in knobs.items() if declared]
        if self.validation is None:
            raise DiffbalanceError("sweep chooses on validation folds, but there is no validation section",
                                   "add validation: {folds: 5} (or per_class: N)")
        tuned: list[str] = []
        for i, sweep in enumerate(self.sweep):
            if sweep.method not in sweepable:
                raise DiffbalanceError(f"sweep[{i}].method {sweep.method!r} is not a method with knobs to sweep",
                                       f"name one of: {', '.join(sweepable) or '(none)'} (methods of "
                                       f"{', '.join(sweepable_rebalancers())})")
            method = next(m for m in self.methods if m.name == sweep.method)
            for knob in sorted(sweep.swept_knobs() - set(knobs[sweep.method])):
                raise DiffbalanceError(f"sweep[{i}].{knob}: {method.rebalancer} has no knob {knob}",
                                       f"sweep only its knobs: {', '.join(knobs[sweep.method])}")
            for name in sweep.also:
                if name not in sweepable or not sweep.swept_knobs() <= set(knobs[name]):
                    raise DiffbalanceError(f"sweep[{i}].also names {name!r}, which cannot take the knobs this sweep "
                                           "chooses", "list only methods of the same rebalancer as the swept one")
            train = choice_recipe(self, method.train, sweep.classifier)
            sweep.recipe(train, train.model, path=f"sweep[{i}].train")  # checked now, not after hours
            tuned += [sweep.method, *sweep.also]
        twice = sorted({n for n in tuned if tuned.count(n) > 1})
        if twice:
            raise DiffbalanceError(f"method(s) {', '.join(twice)} are tuned by more than one sweep",
                                   "let one sweep (its method or its also list) choose each method's knobs")

    @classmethod
    def from_dict(cls, d: Any, path: str = "") -> ExperimentConfig:
        """From a YAML/JSON mapping. Recipes are resolved here: each method's `train` and `reference_train`
        start from the top-level `train`; the reference classifier's model defaults to the first classifier."""
        if isinstance(d, cls):
            return d
        d = renamed(_mapping(d, path or "the config"), ("target",), path, fix="rename it in the config")
        resolved_here = ("methods", "train", "reference_train")
        raw = parse_fields(cls, {k: v for k, v in d.items() if k not in resolved_here}, path)
        classifiers = raw.get("classifiers", cls.classifiers)
        for i, spec in enumerate(classifiers):  # before the recipes borrow the first one
            if isinstance(spec, str):
                check_model(spec, join(path, f"classifiers[{i}]"))
        # the recipe's model is the first classifier's unless it names one (each run sets its own classifier): a
        # recipe for a pretrained backbone (pretrained, input_size, finetune) is checked against that backbone
        first = classifiers[0] if classifiers else "small_cnn"
        base = {"model": first if isinstance(first, str) else first.model,
                **_mapping(d.get("train", {}), join(path, "train"))}
        raw["train"] = TrainConfig.from_dict(base, join(path, "train"))
        methods = d.get("methods", ())
        if not isinstance(methods, (list, tuple)):
            raise DiffbalanceError(f"{join(path, 'methods')} must be a list", "write methods: [{name: none}, …]")
        raw["methods"] = tuple(_method(m, base, join(path, f"methods[{i}]")) for i, m in enumerate(methods))
        reference = {**base, **_mapping(d.get("reference_train", {}), join(path, "reference_train"))}
        raw["reference_train"] = TrainConfig.from_dict(reference, join(path, "reference_train"))
        config = build(cls, raw, path)
        for i, m in enumerate(config.methods):  # every method's parameters, checked now rather than after hours
            check_method_params(m, join(path, f"methods[{i}]"))
        return config


def check_method_params(m: MethodConfig, path: str) -> None:
    """The rebalancer exists and takes these parameters (types, choices, ranges)."""
    for key, (top, _) in SET_ONCE.items():
        if key in m.params:
            raise DiffbalanceError(f"{path}.params.{key} is set per method", f"set {top}: at the top level instead")
    reb = build_rebalancer(m.rebalancer, m.params, path=f"{path}.params")
    if m.filter is not None and not reb.generative:
        raise DiffbalanceError(f"{path}.filter is set on {m.rebalancer}, which generates nothing to filter",
                               f"use filter only with a generative rebalancer ({', '.join(generative_rebalancers())})")


def _mapping(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise DiffbalanceError(f"{path} must be a mapping, got {type(value).__name__}", "write it as key: value pairs")
    return value


def _method(m: Any, base_train: Mapping, path: str) -> MethodConfig:
    if isinstance(m, str):
        m = {"name": m}
    m = _mapping(m, path)
    if "name" not in m:
        raise DiffbalanceError(f"{path} has no name", "give every method a name")
    train = {**base_train, **_mapping(m.get("train", {}), join(path, "train"))}
    return MethodConfig.from_dict({**m, "train": train}, path)


def load_config(path_or_preset: str | Path) -> ExperimentConfig:
    """A config file (YAML/JSON) or the name of a shipped preset (one experiment; see `load_experiments`)."""
    require_type(path_or_preset, (str, os.PathLike), "path_or_preset", "a config file path or a preset name")
    experiments = load_experiments(path_or_preset)
    if len(experiments) != 1:
        raise DiffbalanceError(f"config {path_or_preset} is a study of {len(experiments)} experiments",
                               "run it with `diffbalance run`, which runs each into OUT/<profile name>")
    return experiments[0][1]


def load_experiments(path_or_preset: str | Path) -> list[tuple[str, ExperimentConfig]]:
    """[(sub-folder name, config)]: one experiment ("", config), or a study — a config with `profiles:`, a list of
    {name, imbalance, …} entries, each overriding the shared sections for one experiment."""
    raw = dict(_load_raw(path_or_preset))
    profiles = raw.pop("profiles", None)
    if profiles is None:
        return [("", ExperimentConfig.from_dict(raw))]
    if not isinstance(profiles, list) or not profiles:
        raise DiffbalanceError("profiles must be a non-empty list", "write profiles: [{name: linear, imbalance: …}, …]")
    out = []
    for i, p in enumerate(profiles):
        p = _mapping(p, f"profiles[{i}]")
        name = p.get("name")
        if not isinstance(name, str) or not name:
            raise DiffbalanceError(f"profiles[{i}] has no name", "give every profile a folder-safe name")
        plain_name(name, "profile")  # it becomes OUT/<name>
        overrides = {k: v for k, v in p.items() if k != "name"}
        out.append((name, ExperimentConfig.from_dict({**raw, **overrides,
                                                      "name": f"{raw.get('name', 'experiment')} — {name}"})))
    if len({n for n, _ in out}) != len(out):
        raise DiffbalanceError("profile names repeat", "give every profile a distinct name")
    return out


def _load_raw(path_or_preset: str | Path) -> Mapping:
    text = _read(path_or_preset)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise DiffbalanceError(f"config {path_or_preset} is not valid YAML{where}", "fix the syntax") from None
    if not isinstance(raw, Mapping):
        raise DiffbalanceError(f"config {path_or_preset} is not a mapping of sections", "see `diffbalance presets`")
    return raw


def preset_text(name: str) -> str:
    if name not in PRESETS:
        raise DiffbalanceError(f"unknown preset {name!r}", f"use one of {', '.join(PRESETS)} or a config file")
    return resources.files("diffbalance.presets").joinpath(f"{name}.yaml").read_text()


def _read(path_or_preset: str | Path) -> str:
    path = Path(path_or_preset)
    if path.is_file():
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DiffbalanceError(f"config {path} cannot be read as text ({err.__class__.__name__})",
                                   "give a YAML or JSON file") from None
    if str(path_or_preset) in PRESETS:
        return preset_text(str(path_or_preset))
    raise DiffbalanceError(f"config {path_or_preset} not found", f"give a YAML file or a preset ({', '.join(PRESETS)})")
