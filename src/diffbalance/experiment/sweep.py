"""The sweep: choose a generative method's sampling knobs on training data, one knob at a time, keeping the simpler
point unless a richer one wins by more than its noise.

Strong guidance makes class-typical images that lack diversity; weak guidance diverse ones that may leave their
class; a real-guided start keeps a real image's content; a share of copies keeps the fill partly real. Which mix
trains the best classifier is an empirical question, answered on the validation folds (imbalance.validation:
stratified K-fold cross-validation, or a held-out split as one fold), never on the test set.

Every point is scored on every fold × quick-classifier seed: the fold's training part is filled (with a generator
trained on that part alone, unless `validation.generators: shared`), a quick classifier is trained on it with each
seed, and scored on the fold's held-out images by `validation.score`. All points of a run share folds and seeds, so
two points' scores pair up: d_ks = score_a(k, s) − score_b(k, s).

The search, in this order, starts from the zero point — the fill of plain copies (oversampling itself, which a
real-guided start at strength 0 and a synthetic share of 0 also are):
    0. zero       the copies: the point kept until another beats it
    1. guidance   every w of `guidance_w` with every sampler of `samplers` (a grid, as the paper's w sweep)
    2. init       every start of `init` (noise | real | translate) at the centre so far
    3. strength   every `strength` at the centre so far (skipped when the centre starts from noise)
    4. share      every `synthetic_share` at the centre so far
    5–7. levers   the anchors' levers, each with its zero point: `strength_max` (a per-image strength range,
                  DA-Fusion; real/translate starts), `soft_label_gamma` (Diff-Mix's soft labels; translate starts),
                  `swap_share` (Diff-Mix's per-sample swap) — the last two set the quick classifier's recipe, and
                  points that differ only in them share one fill
The centre is where the next stage explores: the best mean score so far (ties: the centre, then list order). The
chosen point moves only by the one-standard-error rule: a stage's point replaces the chosen one when its paired
advantage over it exceeds one standard error of the paired differences (mean(d) > SE(d) = std(d)/√n, n = folds ×
seeds), the best-scoring such point if several; otherwise the simpler point — the zero point, or the one chosen at
an earlier stage — is kept. Each choice records its margin in standard errors (mean(d)/SE(d)), so a reader sees
how far from the line it fell: a margin near 1 could flip with another processor's rounding, a margin of 3 cannot.
At most 1 + |w|·|samplers| + |init| + |strength| + |share| + |levers| points.

Every point is recorded:
    score             its mean over folds × seeds (what choices are made on), std, SE and each (fold, seed) value;
                      validation accuracy (plain) beside it
    fidelity / diversity   precision and recall (k = 3) and FID of the fills against the real training images of the
                      same classes, in the features the `fid:` section names (Inception or domain); first fold only
    class consistency share of fills the report's reference classifier puts in their class (report only)
and each sweep a scikit-learn `cv_results_`-style table (params, mean/std/rank of the score, one column per split).
Several sweeps (one per tuned method) share a memo: a point with the same fill, quick recipe, seeds and cap is
measured once. The chosen knobs replace the method's own (and those of the methods in `also`) before it runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbalance.infra import distributed
from diffbalance.infra.atomic import write_json
from diffbalance.classify.config import ModelName, TrainConfig, check_model
from diffbalance.classify.train import train_classifier
from diffbalance.infra.configs import Config, current_path
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.evaluate.consistency import class_consistency
from diffbalance.evaluate.metrics import classification_metrics
from diffbalance.generate.cfg.config import Init, Sampler
from diffbalance.generate.guidance import ho_weight
from diffbalance.infra.progress import console
from diffbalance.rebalance.registry import build_rebalancer, sweep_knobs
from diffbalance.rebalance.store import copy_fill
from diffbalance.experiment.training_set import training_inputs

KNOBS = ("sampler", "guidance_w", "init", "strength", "synthetic_share", "strength_max")  # rebalancer knobs; a
# rebalancer declares the ones it takes (`@register(sweep_knobs=...)`, rebalance.base), and only those are swept
TRAIN_KNOBS = ("soft_label_gamma", "swap_share")  # the anchors' training levers a sweep sets (the classifier recipe)
LEVER_ZERO = {"strength_max": None, "soft_label_gamma": None, "swap_share": 0.0}  # each lever's zero point
ZERO = "copies"  # the zero point's label: the fill of plain copies (oversampling), where every sweep starts
ONE_SE = 1.0  # a point replaces the chosen one when its paired advantage exceeds this many standard errors


def chosen_on(score: str) -> str:
    return (f"mean {score.replace('_', ' ')} over validation folds × quick-classifier seeds; a point replaces the "
            f"simpler one (the copies, or the point chosen before) only when its paired advantage exceeds one "
            f"standard error")


@dataclass(frozen=True)
class SweepConfig(Config):
    method: str  # the method whose knobs are chosen (its rebalancer declares sweep_knobs: cfg, ldm, ldm-img2img)
    guidance_w: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 7.5)  # stage 1: Ho & Salimans' w values tried
    samplers: tuple[Sampler, ...] = ()  # stage 1: samplers tried with every w; () = the method's own
    init: tuple[Init, ...] = ()  # stage 2: starts tried (noise | real | translate); () = the method's own
    strength: tuple[float, ...] = ()  # stage 3: strengths of a real/translate start tried; () = the method's own
    synthetic_share: tuple[float, ...] = ()  # stage 4: shares of generated images tried; () = the method's own
    strength_max: tuple[float, ...] = ()  # stage 5: top of a per-image strength range (DA-Fusion), real/translate
    # starts only; () = the method's own
    soft_label_gamma: tuple[float, ...] = ()  # stage 6: Diff-Mix soft-label γ of translated images (0: hard labels),
    # translate starts only; () = the method's recipe's own
    swap_share: tuple[float, ...] = ()  # stage 7: Diff-Mix per-sample swap share (0: off); () = the recipe's own
    also: tuple[str, ...] = ()  # other methods of the same rebalancer (e.g. a filtered variant) that take the chosen
    # knobs too
    max_images_per_class: int | None = None  # sweep fills stop at this many images per class (a cheaper proxy);
    # image i is the same in the sweep and in the final fill, so the final fill only adds the rest
    classifier: ModelName | None = None  # the quick classifier; None = the experiment's first
    train: dict = field(default_factory=dict)  # its recipe: overrides on top of the method's recipe
    seeds: tuple[int, ...] = (0, 1)  # its training seeds, on every fold: a point's score is the mean over both

    def validate(self) -> None:
        if self.classifier is not None:
            check_model(self.classifier, current_path("classifier"))
        self.require(all(w >= 0 for w in self.guidance_w), "guidance_w", "a list of Ho weights w ≥ 0")
        self.require(all(0 <= s <= 1 for s in self.strength), "strength", "a list of strengths in [0, 1]")
        self.require(all(0 <= r <= 1 for r in self.synthetic_share), "synthetic_share", "a list of shares in [0, 1]")
        self.require(all(0 <= r <= 1 for r in self.strength_max), "strength_max", "a list of strengths in [0, 1]")
        self.require(all(0 <= g < math.inf for g in self.soft_label_gamma), "soft_label_gamma", "a list of γ ≥ 0")
        self.require(all(0 <= r <= 1 for r in self.swap_share), "swap_share", "a list of shares in [0, 1]")
        self.require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds",
                     "a list of distinct seeds (2 or more show the validation noise)")
        self.require(self.max_images_per_class is None or self.max_images_per_class >= 1, "max_images_per_class",
                     "a positive count or null")

    def recipe(self, method_train: TrainConfig, default_model: str, path: str = "sweep.train") -> TrainConfig:
        """The quick classifier's recipe: the method's recipe with `train` on top (checked when the config is read)."""
        return TrainConfig.from_dict({**method_train.to_dict(), **self.train, "model": self.classifier or default_model},
                                     path=path)

    def swept_knobs(self) -> set[str]:
        """The rebalancer knobs (KNOBS) this sweep tries values of."""
        return {k for _, candidates in self.stages() for c in candidates for k in c if k in KNOBS}

    def stages(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """(stage name, the knob values each of its candidates sets), in search order; empty stages left out."""
        grid = [{"guidance_w": w, "sampler": s} for s in self.samplers or (None,) for w in self.guidance_w or (None,)]
        grid = [{k: v for k, v in g.items() if v is not None} for g in grid]
        out = [("guidance", grid)] if any(grid) else []
        for knob in ("init", "strength", "synthetic_share", "strength_max", *TRAIN_KNOBS):
            if getattr(self, knob):
                out.append((knob, [{knob: v} for v in getattr(self, knob)]))
        return out


def with_classifier(train: TrainConfig, spec) -> TrainConfig:
    """`train` for a classifier: a name sets the model; a classifier with a recipe of its own
    (experiment.config.ClassifierConfig) its model and its recipe overrides."""
    if isinstance(spec, str):
        return train.replace(model=spec)
    return TrainConfig.from_dict({**train.to_dict(), **spec.train, "model": spec.model},
                                 path=f"classifiers[{spec.name}].train")


def choice_recipe(config, train: TrainConfig, classifier: str | None = None) -> TrainConfig:
    """The recipe choices are made with (sweeps, row selection): `train` for the config's first classifier, unless
    a sweep names a `classifier` model of its own (then `train` as it is; the sweep sets the model). `config`: any
    object with `classifiers` (a stage's config)."""
    return train if classifier else with_classifier(train, config.classifiers[0])


SCORE_DIGITS = 9  # means of scores that are equal counts of images differ in the last bits (0.67 vs 0.6699…)


def score(point: dict) -> float:
    """What a point is ranked on: its mean score, rounded so that equal scores tie exactly (older records: their
    mean validation accuracy)."""
    return round(point.get("score", point.get("validation_accuracy")), SCORE_DIGITS)


def paired_margin(point: dict, simpler: dict) -> dict:
    """`point`'s advantage over `simpler`, paired by (fold, seed): the mean difference, its standard error, and the
    margin mean/SE in standard errors (±inf when every difference is the same non-zero value; 0 when all are 0).
    `beats`: the one-standard-error rule, margin > ONE_SE."""
    a, b = _by_split(point), _by_split(simpler)
    splits = sorted(set(a) & set(b))
    diffs = [round(a[k] - b[k], SCORE_DIGITS) for k in splits]
    if not diffs:
        return {"mean": None, "se": None, "margin_se": None, "n": 0, "beats": False}
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    if se > 0:
        margin = mean / se
    else:
        margin = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return {"mean": mean, "se": se, "margin_se": margin, "n": len(diffs), "beats": bool(margin > ONE_SE)}


def _by_split(point: dict) -> dict[tuple[int, int], float]:
    """(fold, seed) → score of a point; a point recorded before folds: its seeds on fold 0, by validation accuracy."""
    if "scores" in point:
        return {(r["fold"], r["seed"]): r["score"] for r in point["scores"]}
    return {(0, s): acc for s, acc in zip(point.get("seeds", []), point.get("validation_accuracies", []))}


def start(knobs: dict[str, Any]) -> str:
    """Where a point's sampling starts: its `init`, or for a rebalancer without one, "real" when it takes a strength
    (ldm-img2img) and "noise" otherwise."""
    return knobs.get("init", "real" if "strength" in knobs else "noise")


def point_label(knobs: dict[str, Any], train: bool = True) -> str:
    """A point's name, e.g. w2-dpmpp-sde, w2-dpmpp-sde-real0.5, w0.5-ddim-share0.25, w1-ddim-translate0.5-1-soft1,
    w2-ddim-swap0.5 (folder-safe); `train=False`: the fill's part only (points that differ in training share it).
    A knob the method does not take (ldm has no sampler knob) is left out."""
    label = "-".join(p for p in (f"w{knobs['guidance_w']:g}" if "guidance_w" in knobs else "",
                                 knobs.get("sampler", "")) if p) or "default"
    if start(knobs) != "noise":
        label += f"-{start(knobs)}{knobs['strength']:g}"
        if knobs.get("strength_max") not in (None, knobs["strength"]):
            label += f"-{knobs['strength_max']:g}"
    if knobs.get("synthetic_share", 1) < 1:
        label += f"-share{knobs['synthetic_share']:g}"
    if train:
        if knobs.get("soft_label_gamma") and start(knobs) == "translate":
            label += f"-soft{knobs['soft_label_gamma']:g}"
        if knobs.get("swap_share"):
            label += f"-swap{knobs['swap_share']:g}"
    return label


def lever_skipped(stage: str, center: dict[str, Any]) -> str | None:
    """Why a stage does not apply at the centre so far (None when it does)."""
    if stage in ("strength", "strength_max") and start(center) == "noise":
        return "the centre so far starts from noise"
    if stage == "soft_label_gamma" and start(center) != "translate":
        return "the centre so far translates no image"
    return None


@dataclass
class Sweeper:
    """What every sweep of a run shares: how to fill and score a point, the memo of measured points, and where they
    are kept (OUT/sweep/sweep.json; a rerun measures only what is missing)."""

    st: Any  # the run's Stage
    fill_for: Callable  # (method config, knob values, folder name, cap per class, Fold) → the point's fill ImageSet
    reference: Any = None  # the report's reference classifier (consistency) or None
    quality: Callable | None = None  # fills → P/R/FID dict, or None
    memo: dict[str, dict] = field(default_factory=dict)  # point key → its measurements

    @property
    def path(self) -> Path:
        return self.st.out_dir / "sweep" / "sweep.json"

    @property
    def score_name(self) -> str:
        validation = getattr(self.st.config, "validation", None)
        return getattr(validation, "score", "balanced_accuracy")

    def run(self, cfg: SweepConfig, method) -> dict:
        """One method's staged search (module docstring): its points, each stage's candidates, the chosen knobs."""
        if not self.st.folds:
            raise DiffbalanceError("the sweep chooses on validation folds, but the config has no validation section",
                                   "add validation: {folds: 5} (or per_class: N)")
        train = choice_recipe(self.st.config, method.train, cfg.classifier)
        recipe = cfg.recipe(train, train.model)
        declared = sweep_knobs(method.rebalancer)
        own = build_rebalancer(method.rebalancer, {k: v for k, v in method.params.items()
                                                   if k in (*declared, "guidance_convention")}).get_params()
        center = {**{k: own[k] for k in declared}, **{k: getattr(recipe, k) for k in TRAIN_KNOBS}}
        if "guidance_w" in declared:  # the sweep's w are Ho's
            center["guidance_w"] = ho_weight(own["guidance_w"], own.get("guidance_convention", "ho"))
        points = {ZERO: self.measure(zero_method(method), {}, ZERO, recipe, cfg)}
        best, chosen, stages = None, ZERO, []
        for name, candidates in cfg.stages():
            if lever_skipped(name, center):
                stages.append({"stage": name, "skipped": lever_skipped(name, center)})
                continue
            tried = []
            for values in candidates:
                knobs = {**center, **values}
                if (knobs.get("strength_max") or 1.0) < knobs.get("strength", 0.0):  # a range below its start
                    continue
                label = point_label(knobs)
                if label != best and label not in tried:  # the centre so far is in the pool already
                    points[label] = self.measure(method, knobs, label, recipe, cfg)
                    tried.append(label)
            pool = ([best] if best is not None else []) + tried  # ties: the centre so far, then list order
            best = max(pool, key=lambda lab: score(points[lab]))
            center = {k: points[best][k] for k in (*KNOBS, *TRAIN_KNOBS) if k in points[best]}
            margins = {lab: paired_margin(points[lab], points[chosen]) for lab in tried}
            winners = [lab for lab in tried if margins[lab]["beats"]]
            before = chosen
            if winners:
                chosen = max(winners, key=lambda lab: score(points[lab]))
            stages.append({"stage": name, "points": tried, "best": best, "chosen": chosen, "against": before,
                           "margins": margins})
        swept = {k for _, cands in cfg.stages() for c in cands for k in c}
        if chosen == ZERO:
            knobs = {"synthetic_share": 0.0}  # every fill image a copy: oversampling itself
            knobs.update({k: LEVER_ZERO[k] for k in TRAIN_KNOBS if k in swept})  # and the recipe at its zero
        else:
            knobs = {k: points[chosen][k] for k in (*KNOBS, *TRAIN_KNOBS)
                     if k in points[chosen] and (k in swept or (k == "strength" and "init" in swept))}
            if "guidance_w" in knobs:
                knobs["guidance_convention"] = "ho"  # the sweep's w are Ho's
        zero_margin = paired_margin(points[chosen], points[ZERO]) if chosen != ZERO else None
        best_margin = paired_margin(points[best], points[ZERO]) if best is not None else None
        return {"method": method.name, "also": list(cfg.also), "points": points, "stages": stages,
                "chosen": knobs, "chosen_point": chosen, "best_point": best, "zero_point": ZERO,
                "margin_over_zero": zero_margin, "best_over_zero": best_margin,
                "chosen_on": chosen_on(self.score_name), "cv_results": cv_results(points)}

    def measure(self, method, knobs: dict[str, Any], label: str, recipe: TrainConfig, cfg: SweepConfig) -> dict:
        """A point's fills and scores on every fold; from the memo when any sweep of this run measured the same.
        Training levers among the knobs set the quick recipe; the rest the fill (shared by points that differ only
        in training: its folder is named by the fill's knobs alone)."""
        st = self.st
        recipe = recipe.replace(**{k: knobs[k] for k in TRAIN_KNOBS if k in knobs})
        fill_knobs = {k: v for k, v in knobs.items() if k not in TRAIN_KNOBS}
        fill_label = point_label(knobs, train=False) if fill_knobs else label
        key = _point_key(method, knobs, recipe, cfg, _folds_key(st))
        if key in self.memo:
            return self.memo[key]
        console.print(f"[bold]sweep[/] {method.name}: {label}")
        scores, accuracy, macro_f1, histories, first_fill = [], [], [], [], None
        for fold in st.folds:
            fills = self.fill_for(method, fill_knobs, f"{method.name}-{fill_label}", cfg.max_images_per_class, fold)
            first_fill = fills if first_fill is None else first_fill
            # as the final runs train (soft labels, swaps: experiment.training_set)
            train, inputs = training_inputs(fold.train, fills, recipe,
                                            sweep_fill_folder(st.out_dir, f"{method.name}-{fill_label}", fold),
                                            st.config.sampling_strategy, st.config.fill_seed)
            for seed in cfg.seeds:
                clf = train_classifier(train, recipe, device=st.device, seed=seed, progress=st.progress,
                                       validation=fold.held, **inputs)
                val = classification_metrics(fold.held.labels, clf.predict(fold.held.images), fold.held.class_names)
                scores.append({"fold": fold.index, "seed": seed, "score": val[self.score_name]})
                accuracy.append(val["accuracy"])
                macro_f1.append(val["macro_f1"])
                histories.append(clf.history)  # the quick classifier's curve, one per fold × seed
        values = [r["score"] for r in scores]
        self.memo[key] = {
            **knobs, "start": start(knobs), "key": key, "folder": f"{method.name}-{fill_label}",
            "seeds": list(cfg.seeds), "folds": len(st.folds),
            "score_name": self.score_name, "score": statistics.fmean(values),
            "score_std": statistics.stdev(values) if len(values) > 1 else None,
            "score_se": statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None,
            "scores": scores,
            "validation_accuracy": statistics.fmean(accuracy),
            "validation_accuracy_std": statistics.stdev(accuracy) if len(accuracy) > 1 else None,
            "validation_accuracies": accuracy, "validation_macro_f1": statistics.fmean(macro_f1),
            "consistency": (class_consistency(self.reference.predict, first_fill)["agreement_pct"]
                            if self.reference and len(first_fill) else None),
            "quality": self.quality(first_fill) if self.quality and len(first_fill) else None,
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


def sweep_fill_folder(out_dir: Path, name: str, fold) -> Path:
    """Where a sweep point's (or a cross-validated row's) fill of one fold lives: OUT/sweep/<name>, with a
    /<fold name> folder per fold under cross-validation."""
    folder = Path(out_dir) / "sweep" / name
    return folder / fold.name if fold.count > 1 else folder


def zero_method(method):
    """The zero point of a generative method's sweep: the same row filled with plain copies (`oversample`, the
    images a synthetic share of 0 or a real start at strength 0 make), with the method's own recipe."""
    return method.replace(rebalancer="oversample", params={}, filter=None)


def cv_results(points: dict[str, dict]) -> dict[str, list]:
    """scikit-learn's `cv_results_` layout for a sweep's points: params, mean/std/rank of the score, and one
    `split<k>_test_score` column per (fold, seed) split, in the points' order (rank 1 = best; ties share a rank)."""
    labels = list(points)
    splits = sorted({k for lab in labels for k in _by_split(points[lab])})
    out: dict[str, list] = {"label": labels,
                            "params": [{k: points[lab][k] for k in (*KNOBS, *TRAIN_KNOBS) if k in points[lab]}
                                       for lab in labels],
                            "mean_test_score": [score(points[lab]) for lab in labels],
                            "std_test_score": [points[lab].get("score_std") for lab in labels]}
    out["rank_test_score"] = [1 + sum(v > m for v in out["mean_test_score"]) for m in out["mean_test_score"]]
    for j, (fold, seed) in enumerate(splits):
        out[f"split{j}_test_score"] = [_by_split(points[lab]).get((fold, seed)) for lab in labels]
    out["splits"] = [{"fold": f, "seed": s} for f, s in splits]
    return out


def _folds_key(st) -> list:
    """What identifies the folds a point is scored on: how many, and the held-out images' count per class."""
    return [[fold.index, fold.count, fold.held.counts()] for fold in st.folds]


def _point_key(method, knobs: dict[str, Any], recipe: TrainConfig, cfg: SweepConfig, folds: list) -> str:
    """What decides a point's scores: the fill (rebalancer and its parameters), the quick recipe, seeds, cap, folds."""
    ident = {"rebalancer": method.rebalancer, "params": {**method.params, **knobs}, "recipe": recipe.to_dict(),
             "seeds": list(cfg.seeds), "cap": cfg.max_images_per_class, "folds": folds}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_sweeps(sweeper: Sweeper, sweeps: tuple[SweepConfig, ...], methods: dict) -> dict:
    """Every sweep of the run, in order; `methods`: name → MethodConfig. Returns results["sweep"]."""
    sweeper.load()
    done = [sweeper.run(cfg, methods[cfg.method]) for cfg in sweeps]
    sweeper.save(done)
    return {"sweeps": done, "chosen_on": chosen_on(sweeper.score_name)}


def tuned_params(sweep_results: dict) -> dict[str, dict[str, Any]]:
    """Method name → the rebalancer parameters its sweep sets: the swept method takes every knob of the chosen point
    (so its fill is that point's images; the zero point: a synthetic share of 0, all copies), the `also` methods the
    knobs the sweep chose. The training levers it chose: `tuned_train`."""
    out = {}
    for s in sweep_results["sweeps"]:
        chosen = {k: v for k, v in s["chosen"].items() if k not in TRAIN_KNOBS}
        for name in s["also"]:
            out[name] = chosen
        if s["chosen_point"] is not None and s["chosen_point"] != s.get("zero_point"):
            point = s["points"][s["chosen_point"]]
            out[s["method"]] = {**{k: point[k] for k in KNOBS if k in point}, "guidance_convention": "ho"}
        elif s["chosen_point"] is not None:
            out[s["method"]] = chosen
    return out


def tuned_train(sweep_results: dict) -> dict[str, dict[str, Any]]:
    """Method name → the training levers (soft_label_gamma, swap_share) its sweep chose, for its recipe."""
    out = {}
    for s in sweep_results["sweeps"]:
        levers = {k: v for k, v in s["chosen"].items() if k in TRAIN_KNOBS}
        if levers:
            for name in (s["method"], *s["also"]):
                out[name] = levers
    return out


def apply_tuning(methods: list, sweep_results: dict | None) -> list:
    """The methods with their sweeps' choices in place: rebalancer knobs in `params`, training levers in `train`."""
    if not sweep_results:
        return list(methods)
    params, train = tuned_params(sweep_results), tuned_train(sweep_results)
    return [m.replace(params={**m.params, **params.get(m.name, {})},
                      train=m.train.replace(**train.get(m.name, {})))
            if m.name in params or m.name in train else m for m in methods]


def reuse_chosen_fill(out_dir: Path, sweep: dict) -> None:
    """Copy a sweep's chosen point's finished fill to OUT/fills/<method> (sampling it again would give the same
    images; the final fill then only adds the images beyond the sweep's cap), replacing a fill of another choice.
    Only a held-out split's fill is the final fill's start (a fold's fill is made from part of the training set),
    and only a generated point's (the zero point's copies are made by another rebalancer)."""
    point = sweep["points"][sweep["chosen_point"]]
    source = Path(out_dir) / "sweep" / point["folder"]
    if point.get("folds", 1) == 1 and sweep["chosen_point"] != sweep.get("zero_point") and source.is_dir():
        copy_fill(source, Path(out_dir) / "fills" / sweep["method"])
