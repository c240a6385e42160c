"""Guidance and diversity sweep: choose a CFG method's guidance weight w (and sampler) on validation accuracy.

Strong guidance makes class-typical images that lack diversity; weak guidance diverse ones that may leave their
class. For every (w, sampler) of the `sweep:` section the method's fill is made (the generator is trained once and
shared), and recorded:
    fidelity / diversity   precision and recall (k = 3) and FID of the fills against the real training images of the
                           same classes, in the features the `fid:` section names (Inception or domain)
    class consistency      share of fills the report's reference classifier puts in their class (report only)
    validation accuracy    of a quickly trained classifier on imbalanced real + these fills — the one number the
                           choice is made on
The chosen point's w and sampler replace the method's own before the experiment runs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from diffbalance import distributed
from diffbalance.atomic import write_json
from diffbalance.classify.config import ModelName, TrainConfig
from diffbalance.classify.train import train_classifier
from diffbalance.configs import Config
from diffbalance.errors import DiffbalanceError
from diffbalance.evaluate.consistency import class_consistency
from diffbalance.evaluate.metrics import classification_metrics
from diffbalance.progress import console
from diffbalance.rebalance.store import copy_fill

Sampler = Literal["ddpm", "ddim", "dpmpp", "dpmpp-sde"]


@dataclass(frozen=True)
class SweepConfig(Config):
    method: str  # the name of the cfg method whose guidance is chosen
    guidance_w: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 7.5)  # Ho & Salimans' w values tried
    samplers: tuple[Sampler, ...] = ("dpmpp-sde",)  # samplers tried (every w with every sampler)
    also: tuple[str, ...] = ()  # other methods (e.g. a filtered variant) that take the chosen w and sampler too
    max_images_per_class: int | None = None  # sweep fills stop at this many images per class (a cheaper proxy);
    # image i is the same in the sweep and in the final fill, so the final fill only adds the rest
    classifier: ModelName | None = None  # the quick classifier; None = the experiment's first
    train: dict = field(default_factory=dict)  # its recipe: overrides on top of the method's recipe
    seed: int = 0  # its training seed

    def validate(self) -> None:
        self.require(len(self.guidance_w) > 0 and min(self.guidance_w) >= 0, "guidance_w",
                     "a list of Ho weights w ≥ 0")
        self.require(len(self.samplers) > 0, "samplers", "a list of at least one sampler")
        self.require(self.max_images_per_class is None or self.max_images_per_class >= 1, "max_images_per_class",
                     "a positive count or null")


def sweep_point_name(w: float, sampler: str) -> str:
    return f"w{w:g}-{sampler}"


def run_sweep(st, method, fill_for, reference=None, quality=None) -> dict:
    """Every (w, sampler) of `st.config.sweep` for `method` (a MethodConfig): fills, measures, validation accuracy,
    and the chosen point. `fill_for(method)` makes (or resumes) a method's fill under OUT/sweep/; `reference` is the
    report's reference classifier or None; `quality(fills)` → P/R/FID dict or None. Results are kept in
    OUT/sweep/sweep.json so a rerun only adds what is missing."""
    cfg = st.config.sweep
    if st.validation is None:
        raise DiffbalanceError("the sweep chooses on validation accuracy, but the config has no validation split",
                               "add validation: {per_class: N} (or fraction: f)")
    path = st.out_dir / "sweep" / "sweep.json"
    done = json.loads(path.read_text())["points"] if path.is_file() else {}
    recipe = TrainConfig.from_dict({**method.train.to_dict(), **cfg.train,
                                    "model": cfg.classifier or st.config.classifiers[0]}, path="sweep.train")
    for sampler in cfg.samplers:
        for w in cfg.guidance_w:
            name = sweep_point_name(w, sampler)
            if name in done:
                continue
            point = method.replace(name=f"{method.name}-{name}",
                                   params={**method.params, "guidance_w": w, "guidance_convention": "ho",
                                           "sampler": sampler})
            console.print(f"[bold]sweep[/] {method.name}: w = {w:g}, {sampler}")
            fills = fill_for(point)
            clf = train_classifier(st.imbalanced.concat(fills), recipe, device=st.device, seed=cfg.seed,
                                   progress=st.progress)
            val = classification_metrics(st.validation.labels, clf.predict(st.validation.images),
                                         st.validation.class_names)
            done[name] = {"guidance_w": w, "sampler": sampler, "validation_accuracy": val["accuracy"],
                          "validation_macro_f1": val["macro_f1"],
                          "consistency": class_consistency(reference.predict, fills)["agreement_pct"] if reference else None,
                          "quality": quality(fills) if quality else None}
            distributed.on_main(lambda: write_json(path, {"method": method.name, "points": done}))
    best = max(done.values(), key=lambda p: (p["validation_accuracy"], -p["guidance_w"]))
    result = {"method": method.name, "points": done, "chosen": {"guidance_w": best["guidance_w"],
                                                                "sampler": best["sampler"]},
              "chosen_on": "validation accuracy of a quickly trained classifier (ties: the smaller w)"}
    distributed.on_main(lambda: write_json(path, result))
    return result


def reuse_chosen_fill(out_dir: Path, method: str, chosen: dict) -> None:
    """Copy the chosen point's finished fill to OUT/fills/<method> (sampling it again would give the same images),
    replacing a fill made with another choice there."""
    point = f"{method}-{sweep_point_name(chosen['guidance_w'], chosen['sampler'])}"
    copy_fill(Path(out_dir) / "sweep" / point, Path(out_dir) / "fills" / method)
