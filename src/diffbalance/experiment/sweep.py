"""The sweep: choose a cfg method's sampling knobs on validation accuracy, one knob at a time.

Strong guidance makes class-typical images that lack diversity; weak guidance diverse ones that may leave their
class; a real-guided start keeps a real image's content; a share of copies keeps the fill partly real. Which mix
trains the best classifier is an empirical question, answered on the validation split, never on the test set.

A staged search (coordinate ascent over a bounded number of points), in this order:
    1. guidance   every w of `guidance_w` with every sampler of `samplers` (a grid, as the paper's w sweep)
    2. init       every start of `init` (noise | real | translate) at the best point so far
    3. strength   every `strength` at the best point so far (skipped when the best start is noise)
    4. share      every `synthetic_share` at the best point so far (0 = all copies: oversampling itself)
An empty list keeps the method's own value and runs no stage. Each stage keeps the best point so far unless a
candidate is strictly better (ties: the best so far, then the earlier value in the list), so a later stage never
makes the validation score worse, and the zero points (strength 0, share 0 = oversampling) let the method fall
back to copies when generation does not help. At most |w|·|samplers| + |init| + |strength| + |share| points.

Every point is recorded:
    validation accuracy    mean and std over `seeds` of a quickly trained classifier on imbalanced real + the
                           point's fill: the mean is the one number the choice is made on; the std is the noise
                           of the quick classifier, shown beside it
    fidelity / diversity   precision and recall (k = 3) and FID of the fills against the real training images of the
                           same classes, in the features the `fid:` section names (Inception or domain)
    class consistency      share of fills the report's reference classifier puts in their class (report only)
Several sweeps (one per tuned method) share a memo: a point with the same fill, quick recipe, seeds and cap is
measured once. The chosen knobs replace the method's own (and those of the methods in `also`) before it runs.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbalance.infra import distributed
from diffbalance.infra.atomic import write_json
from diffbalance.classify.config import ModelName, TrainConfig
from diffbalance.classify.train import train_classifier
from diffbalance.infra.configs import Config
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.evaluate.consistency import class_consistency
from diffbalance.evaluate.metrics import classification_metrics
from diffbalance.generate.cfg.config import Init, Sampler
from diffbalance.generate.guidance import ho_weight
from diffbalance.infra.progress import console
from diffbalance.rebalance.registry import build_rebalancer
from diffbalance.rebalance.store import copy_fill

KNOBS = ("sampler", "guidance_w", "init", "strength", "synthetic_share")  # the parameters a sweep sets
CHOSEN_ON = ("mean validation accuracy of quickly trained classifiers over the sweep's seeds (ties: the best point "
             "so far, then the earlier value)")


@dataclass(frozen=True)
class SweepConfig(Config):
    method: str  # the name of the cfg method whose knobs are chosen
    guidance_w: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 7.5)  # stage 1: Ho & Salimans' w values tried
    samplers: tuple[Sampler, ...] = ()  # stage 1: samplers tried with every w; () = the method's own
    init: tuple[Init, ...] = ()  # stage 2: starts tried (noise | real | translate); () = the method's own
    strength: tuple[float, ...] = ()  # stage 3: strengths of a real/translate start tried; () = the method's own
    synthetic_share: tuple[float, ...] = ()  # stage 4: shares of generated images tried; () = the method's own
    also: tuple[str, ...] = ()  # other cfg methods (e.g. a filtered variant) that take the chosen knobs too
    max_images_per_class: int | None = None  # sweep fills stop at this many images per class (a cheaper proxy);
    # image i is the same in the sweep and in the final fill, so the final fill only adds the rest
    classifier: ModelName | None = None  # the quick classifier; None = the experiment's first
    train: dict = field(default_factory=dict)  # its recipe: overrides on top of the method's recipe
    seeds: tuple[int, ...] = (0, 1)  # its training seeds: a point's score is the mean over them

    def validate(self) -> None:
        self.require(all(w >= 0 for w in self.guidance_w), "guidance_w", "a list of Ho weights w ≥ 0")
        self.require(all(0 <= s <= 1 for s in self.strength), "strength", "a list of strengths in [0, 1]")
        self.require(all(0 <= r <= 1 for r in self.synthetic_share), "synthetic_share", "a list of shares in [0, 1]")
        self.require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds",
                     "a list of distinct seeds (2 or more show the validation noise)")
        self.require(self.max_images_per_class is None or self.max_images_per_class >= 1, "max_images_per_class",
                     "a positive count or null")

    def recipe(self, method_train: TrainConfig, default_model: str, path: str = "sweep.train") -> TrainConfig:
        """The quick classifier's recipe: the method's recipe with `train` on top (checked when the config is read)."""
        return TrainConfig.from_dict({**method_train.to_dict(), **self.train, "model": self.classifier or default_model},
                                     path=path)

    def stages(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """(stage name, the knob values each of its candidates sets), in search order; empty stages left out."""
        grid = [{"guidance_w": w, "sampler": s} for s in self.samplers or (None,) for w in self.guidance_w or (None,)]
        grid = [{k: v for k, v in g.items() if v is not None} for g in grid]
        out = [("guidance", grid)] if any(grid) else []
        for knob in ("init", "strength", "synthetic_share"):
            if getattr(self, knob):
                out.append((knob, [{knob: v} for v in getattr(self, knob)]))
        return out


SCORE_DIGITS = 9  # means of accuracies that are equal counts of images differ in the last bits (0.67 vs 0.6699…)


def score(point: dict) -> float:
    """What a point is chosen on: its mean validation accuracy, rounded so that equal scores tie exactly."""
    return round(point["validation_accuracy"], SCORE_DIGITS)


def point_label(knobs: dict[str, Any]) -> str:
    """A point's name, e.g. w2-dpmpp-sde, w2-dpmpp-sde-real0.5, w0.5-ddim-share0.25 (folder-safe)."""
    label = f"w{knobs['guidance_w']:g}-{knobs['sampler']}"
    if knobs["init"] != "noise":
        label += f"-{knobs['init']}{knobs['strength']:g}"
    if knobs["synthetic_share"] < 1:
        label += f"-share{knobs['synthetic_share']:g}"
    return label


@dataclass
class Sweeper:
    """What every sweep of a run shares: how to fill and score a point, the memo of measured points, and where they
    are kept (OUT/sweep/sweep.json; a rerun measures only what is missing)."""

    st: Any  # the run's Stage
    fill_for: Callable  # (method config, knob values, folder name, cap per class) → the point's fill ImageSet
    reference: Any = None  # the report's reference classifier (consistency) or None
    quality: Callable | None = None  # fills → P/R/FID dict, or None
    memo: dict[str, dict] = field(default_factory=dict)  # point key → its measurements

    @property
    def path(self) -> Path:
        return self.st.out_dir / "sweep" / "sweep.json"

    def run(self, cfg: SweepConfig, method) -> dict:
        """One method's staged search (module docstring): its points, each stage's candidates, the chosen knobs."""
        if self.st.validation is None:
            raise DiffbalanceError("the sweep chooses on validation accuracy, but the config has no validation split",
                                   "add validation: {per_class: N} (or fraction: f)")
        recipe = cfg.recipe(method.train, self.st.config.classifiers[0])
        own = build_rebalancer("cfg", {k: v for k, v in method.params.items()
                                       if k in (*KNOBS, "guidance_convention")}).get_params()
        current = {**{k: own[k] for k in KNOBS}, "guidance_w": ho_weight(own["guidance_w"], own["guidance_convention"])}
        best, stages, points = None, [], {}
        for name, candidates in cfg.stages():
            if name == "strength" and current["init"] == "noise":
                stages.append({"stage": name, "skipped": "the best start so far is noise"})
                continue
            tried = []
            for values in candidates:
                knobs = {**current, **values}
                label = point_label(knobs)
                if label != best and label not in tried:  # the best so far is in the pool already
                    points[label] = self.measure(method, knobs, label, recipe, cfg)
                    tried.append(label)
            pool = ([best] if best is not None else []) + tried  # ties: the best so far, then list order
            best = max(pool, key=lambda lab: score(points[lab]))
            current = {k: points[best][k] for k in KNOBS}
            stages.append({"stage": name, "points": tried, "best": best})
        swept = {k for _, cands in cfg.stages() for c in cands for k in c}
        chosen = {k: current[k] for k in KNOBS if k in swept or (k == "strength" and "init" in swept)}
        if "guidance_w" in chosen:
            chosen["guidance_convention"] = "ho"  # the sweep's w are Ho's
        return {"method": method.name, "also": list(cfg.also), "points": points, "stages": stages,
                "chosen": chosen, "chosen_point": best, "chosen_on": CHOSEN_ON}

    def measure(self, method, knobs: dict[str, Any], label: str, recipe: TrainConfig, cfg: SweepConfig) -> dict:
        """A point's fill and scores; from the memo when any sweep of this run measured the same point."""
        key = _point_key(method, knobs, recipe, cfg)
        if key in self.memo:
            return self.memo[key]
        st = self.st
        console.print(f"[bold]sweep[/] {method.name}: {label}")
        fills = self.fill_for(method, knobs, f"{method.name}-{label}", cfg.max_images_per_class)
        accuracy, macro_f1, histories = [], [], []
        for seed in cfg.seeds:
            clf = train_classifier(st.imbalanced.concat(fills), recipe, device=st.device, seed=seed,
                                   progress=st.progress, validation=st.validation)
            val = classification_metrics(st.validation.labels, clf.predict(st.validation.images),
                                         st.validation.class_names)
            accuracy.append(val["accuracy"])
            macro_f1.append(val["macro_f1"])
            histories.append(clf.history)  # the quick classifier's curve, one per seed
        self.memo[key] = {
            **knobs, "key": key, "folder": f"{method.name}-{label}", "seeds": list(cfg.seeds),
            "validation_accuracy": statistics.fmean(accuracy),
            "validation_accuracy_std": statistics.stdev(accuracy) if len(accuracy) > 1 else None,
            "validation_accuracies": accuracy, "validation_macro_f1": statistics.fmean(macro_f1),
            "consistency": class_consistency(self.reference.predict, fills)["agreement_pct"] if self.reference else None,
            "quality": self.quality(fills) if self.quality else None,
            "histories": histories,
        }
        self.save()
        return self.memo[key]

    def load(self) -> None:
        """Points measured by an earlier invocation of this run (sweep.json's memo)."""
        if self.path.is_file():
            try:
                self.memo = json.loads(self.path.read_text()).get("memo", {})
            except ValueError:
                self.memo = {}

    def save(self, sweeps: list[dict] | None = None) -> None:
        body = {"memo": self.memo, **({"sweeps": sweeps} if sweeps is not None else {})}
        distributed.on_main(lambda: write_json(self.path, body))


def _point_key(method, knobs: dict[str, Any], recipe: TrainConfig, cfg: SweepConfig) -> str:
    """What decides a point's scores: the fill (rebalancer and its parameters), the quick recipe, seeds and cap."""
    ident = {"rebalancer": method.rebalancer, "params": {**method.params, **knobs}, "recipe": recipe.to_dict(),
             "seeds": list(cfg.seeds), "cap": cfg.max_images_per_class}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_sweeps(sweeper: Sweeper, sweeps: tuple[SweepConfig, ...], methods: dict) -> dict:
    """Every sweep of the run, in order; `methods`: name → MethodConfig. Returns results["sweep"]."""
    sweeper.load()
    done = [sweeper.run(cfg, methods[cfg.method]) for cfg in sweeps]
    sweeper.save(done)
    return {"sweeps": done, "chosen_on": CHOSEN_ON}


def tuned_params(sweep_results: dict) -> dict[str, dict[str, Any]]:
    """Method name → the parameters its sweep sets: the swept method takes every knob of the chosen point (so its
    fill is that point's images), the `also` methods the knobs the sweep chose."""
    out = {}
    for s in sweep_results["sweeps"]:
        for name in s["also"]:
            out[name] = s["chosen"]
        if s["chosen_point"] is not None:
            point = s["points"][s["chosen_point"]]
            out[s["method"]] = {**{k: point[k] for k in KNOBS}, "guidance_convention": "ho"}
    return out


def reuse_chosen_fill(out_dir: Path, sweep: dict) -> None:
    """Copy a sweep's chosen point's finished fill to OUT/fills/<method> (sampling it again would give the same
    images; the final fill then only adds the images beyond the sweep's cap), replacing a fill of another choice."""
    point = sweep["points"][sweep["chosen_point"]]
    copy_fill(Path(out_dir) / "sweep" / point["folder"], Path(out_dir) / "fills" / sweep["method"])

