"""The experiment config: typed, frozen, one object per stage, validated on load and saved before work starts.

A config file is YAML (or JSON) with the sections below; unknown keys are an error, so a typo never silently
falls back to a default. Presets (`demo`, `paper-cifar10`) are such files shipped in `diffbalance/presets/`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from diffbalance.data.sources import DataConfig
from diffbalance.configs import checked_fields
from diffbalance.errors import DiffbalanceError
from diffbalance.imbalance.subset import ImbalanceConfig

PRESETS = ("demo", "paper-cifar10")


def strict_fields(cls, d: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check that config section `where` only has keys that are fields of dataclass `cls`."""
    return checked_fields(cls, d, f"{where} key")


@dataclass(frozen=True)
class MethodConfig:
    name: str  # label in tables and folder names, e.g. "cfg-w7.5"
    rebalancer: str = "none"  # a registered rebalancer: none, oversample, mixup, cutmix, cfg, ldm, ldm-img2img
    params: dict = field(default_factory=dict)  # the rebalancer's parameters
    train: dict = field(default_factory=dict)  # classifier-recipe overrides for this method (loss, batch_mix)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"  # shown in the report title
    data: DataConfig = field(default_factory=DataConfig)  # which dataset and where it is
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)  # how the training set is cut
    target: Any = "auto"  # images per class after filling: auto | not majority | minority | ratio | {class: n}
    methods: tuple[MethodConfig, ...] = ()  # the rebalancing methods compared
    classifiers: tuple[str, ...] = ("small_cnn",)  # classifier names (small_cnn, resnet18, resnet50)
    train: dict = field(default_factory=dict)  # the classifier recipe (TrainConfig fields) shared by all runs
    seeds: tuple[int, ...] = (0,)  # classifier seeds; every method × classifier is trained once per seed
    fill_seed: int = 0  # base seed of the fill images (one fill per method, shared by all classifier seeds)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    consistency: bool = True  # label generated images with a reference classifier trained on balanced real data
    reference_train: dict = field(default_factory=dict)  # recipe overrides for that reference classifier
    reference_images_per_class: int | None = None  # balanced real images per class for it (None = all)
    fid: dict | None = None  # generation-quality section (FidConfig fields); None = skip
    grid_images_per_class: int = 8  # fill images per class in the report's sample grids

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        d = strict_fields(cls, d, "top level")
        if "data" in d:
            d["data"] = DataConfig.from_dict(d["data"])
        if "imbalance" in d:
            imb = strict_fields(ImbalanceConfig, d["imbalance"], "imbalance")
            if imb.get("order") is not None:
                imb["order"] = tuple(int(c) if str(c).isdigit() else str(c) for c in imb["order"])
            d["imbalance"] = ImbalanceConfig(**imb)
        methods = []
        for i, m in enumerate(d.get("methods", ())):
            m = {"name": m} if isinstance(m, str) else m
            m = strict_fields(MethodConfig, m, f"methods[{i}]")
            m.setdefault("rebalancer", m["name"] if "name" in m else "none")
            if "name" not in m:
                raise DiffbalanceError(f"methods[{i}] has no name", "give every method a name")
            methods.append(MethodConfig(**m))
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise DiffbalanceError(f"method names repeat: {names}", "give every method a distinct name")
        d["methods"] = tuple(methods)
        for key in ("classifiers", "seeds"):
            if key in d:
                d[key] = tuple(d[key])
        for key in ("train", "reference_train"):
            if key in d and not isinstance(d[key], Mapping):
                raise DiffbalanceError(f"config section {key} must be a mapping", "fix the config file")
        try:
            return cls(**d)
        except TypeError as err:
            raise DiffbalanceError(f"malformed config: {err}", "compare with `diffbalance presets`") from None

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def load_config(path_or_preset: str | Path) -> ExperimentConfig:
    """A config file (YAML/JSON) or the name of a shipped preset."""
    text = _read(path_or_preset)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise DiffbalanceError(f"config {path_or_preset} is not valid YAML{where}", "fix the syntax") from None
    if not isinstance(raw, Mapping):
        raise DiffbalanceError(f"config {path_or_preset} is not a mapping of sections", "see `diffbalance presets`")
    return ExperimentConfig.from_dict(raw)


def preset_text(name: str) -> str:
    if name not in PRESETS:
        raise DiffbalanceError(f"unknown preset {name!r}", f"use one of {', '.join(PRESETS)} or a config file")
    return resources.files("diffbalance.presets").joinpath(f"{name}.yaml").read_text()


def _read(path_or_preset: str | Path) -> str:
    path = Path(path_or_preset)
    if path.is_file():
        return path.read_text()
    if str(path_or_preset) in PRESETS:
        return preset_text(str(path_or_preset))
    raise DiffbalanceError(f"config {path_or_preset} not found", f"give a YAML file or a preset ({', '.join(PRESETS)})")
