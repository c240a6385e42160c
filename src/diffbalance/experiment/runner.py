"""Run methods × classifiers × seeds on one imbalanced set, then report.

Stages, each resumable (a rerun of the same config in the same folder redoes only what is missing):
    data → imbalance → fill (per method) → train classifiers (per method × classifier × seed) → evaluate → report

Run folder:
    config.resolved.json   the full config, written before any work
    fills/<method>/        PNG ImageFolder + manifest of each method's fill images
    generators/<hash>/     generators trained on the fly (shared by methods with the same training config)
    checkpoints/<run>/     classifier checkpoints
    results.json           rewritten (atomically) after every finished run
    report.md, figures/    written at the end
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from diffbalance.atomic import check_writable, output_lock, remove_stale_temps, write_json
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import TrainedClassifier, train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.data.sources import load_train_test
from diffbalance.device import describe, resolve_device
from diffbalance.evaluate.consistency import class_consistency
from diffbalance.evaluate.fid.protocol import quality_report
from diffbalance.evaluate.metrics import classification_metrics
from diffbalance.experiment.config import ExperimentConfig, MethodConfig
from diffbalance.experiment.filter import acceptance, filtered_fill, kept_and_rejected
from diffbalance.experiment.sweep import reuse_chosen_fill, run_sweep
from diffbalance.errors import DiffbalanceError
from diffbalance.imbalance.subset import apply_profile, make_imbalanced
from diffbalance.imbalance.targets import generation_counts
from diffbalance.imbalance.validation import split_validation
from diffbalance.progress import console
from diffbalance.rebalance.base import Rebalancer
from diffbalance.rebalance.registry import build_rebalancer, rebalancer_class
from diffbalance.rebalance.store import fill, load_fill
from diffbalance.report.verdict import paired_verdict
from diffbalance.report.write import write_report
from diffbalance.resources import check_memory, image_bytes


@dataclass
class Stage:
    """What the stages share: the resolved data and where things go."""

    config: ExperimentConfig
    out_dir: Path
    device: torch.device
    train_full: ImageSet  # the original (balanced) training set
    test: ImageSet
    imbalanced: ImageSet  # the imbalanced training images every method starts from (validation part removed)
    validation: ImageSet | None  # real images held out for every choice; None without a validation section
    add: list[int]  # images the target asks for per class (methods that generate add these)
    progress: bool
    reference: TrainedClassifier | None = None  # trained on first use, shared by consistency and domain FID


def prepare_stage(config: ExperimentConfig, out_dir: Path, progress: bool = True) -> Stage:
    """Everything checked before anything is written: the device (resolved once for the whole run), the output
    folder, the data and profile, the target, every method's files and model ids, and the memory the run needs.
    The config's sections and every method's parameters were checked when it was read."""
    device = resolve_device(config.device)
    out_dir = check_writable(Path(out_dir))
    train, test, imbalanced, validation = load_imbalanced(config)
    add = generation_counts(imbalanced.counts(), config.target, imbalanced.class_names)
    for m in config.methods:
        method_rebalancer(config, m, device).check()
    c, h, w = imbalanced.images.shape[1:]
    check_memory(image_bytes(len(train) + len(test) + len(imbalanced) + 2 * sum(add), c, h, w),
                 f"this run ({sum(add)} fill images per method of {c}×{h}×{w})",
                 "lower the target, or use smaller images")
    return Stage(config, out_dir, device, train, test, imbalanced, validation, add, progress)


def method_rebalancer(config: ExperimentConfig, m: MethodConfig, device: torch.device | str = "auto") -> Rebalancer:
    """The method's rebalancer. The one place where the experiment's `target` becomes its `sampling_strategy`
    (and `fill_seed` its `random_state`)."""
    index = [x.name for x in config.methods].index(m.name)
    params = {**m.params, "sampling_strategy": config.target, "random_state": config.fill_seed, "device": device}
    return build_rebalancer(m.rebalancer, params, path=f"methods[{index}].params")


def load_imbalanced(config: ExperimentConfig) -> tuple[ImageSet, ImageSet, ImageSet, ImageSet | None]:
    """(original train, test, imbalanced train, validation) as the config's data, imbalance and validation sections
    describe; the validation images are held out of the imbalanced set (None without a validation section)."""
    train, test = load_train_test(config.data)
    imbalanced, validation = split_validation(apply_profile(train, config.imbalance), config.validation)
    return train, test, imbalanced, validation


def load_rebalanced(run_dir: Path, method: str) -> ImageSet:
    """A finished run's rebalanced training set for one method: its imbalanced real images + that method's fills."""
    run_dir = Path(run_dir)
    path = run_dir / "config.resolved.json"
    if not path.is_file():
        raise DiffbalanceError(f"{run_dir} is not a diffbalance run folder (no config.resolved.json)", "give the --out folder of `diffbalance run`")
    config = ExperimentConfig.from_dict(json.loads(path.read_text()))
    names = [m.name for m in config.methods]
    if method not in names:
        raise DiffbalanceError(f"run {run_dir} has no method {method!r}", f"use one of {', '.join(names)}")
    _, _, imbalanced, _ = load_imbalanced(config)
    fill_dir = run_dir / "fills" / method
    if not fill_dir.is_dir():  # runs made before identity methods wrote an (empty) fill folder
        return imbalanced
    return imbalanced.concat(load_fill(fill_dir, imbalanced.class_names), source=f"{run_dir} {method} rebalanced")


def run_experiment(config: ExperimentConfig, out_dir: Path, progress: bool = True) -> dict:
    """The whole pipeline; returns the results dict also written to `out_dir/results.json`. Nothing is written
    before every input is checked; one process at a time writes a run folder; what a killed run left half-written
    is removed before it resumes."""
    st = prepare_stage(config, out_dir, progress)
    with output_lock(st.out_dir):
        remove_stale_temps(st.out_dir)
        write_json(st.out_dir / "config.resolved.json", config.to_dict())
        return _run_stages(st, config)


def _run_stages(st: Stage, config: ExperimentConfig) -> dict:
    results = _load_previous(st)
    methods = list(config.methods)
    if config.sweep is not None:  # the chosen w and sampler replace the method's own before it runs
        results["sweep"] = sweep_table(st, config)
        chosen = results["sweep"]["chosen"]
        reuse_chosen_fill(st.out_dir, config.sweep.method, chosen)
        tuned = {config.sweep.method, *config.sweep.also}
        methods = [m.replace(params={**m.params, **chosen, "guidance_convention": "ho"}) if m.name in tuned else m
                   for m in methods]
    fills = {m.name: method_fill(st, m) for m in methods}
    for m in methods:
        for clf in config.classifiers:
            for seed in config.seeds:
                if _find_run(results, m.name, clf, seed) is None:
                    results["runs"].append(train_and_evaluate(st, m, clf, seed, fills[m.name]))
                    write_json(st.out_dir / "results.json", results)
    generated = {m.name: fills[m.name] for m in config.methods if len(fills[m.name])}
    filtered = {m.name: kept_and_rejected(st.out_dir / "fills" / m.name, st.imbalanced.class_names)
                for m in config.methods if m.filter is not None and m.name in generated}
    if filtered:
        results["filter"] = {name: acceptance(st.out_dir / "fills" / name, list(st.imbalanced.class_names))
                             for name in filtered}
    if generated and config.consistency:
        results["consistency"] = consistency_table(st, config, generated)
    if generated and config.fid is not None:
        results["quality"] = quality_table(st, generated)
    if st.validation is not None:
        results["verdict"] = {clf: paired_verdict(results["runs"], clf) for clf in config.classifiers}
    write_json(st.out_dir / "results.json", results)
    write_report(st.out_dir, results, st.imbalanced, generated, config.to_dict(), train_defaults=TrainConfig().to_dict(),
                 filtered=filtered)
    return results


def sweep_table(st: Stage, config: ExperimentConfig) -> dict:
    """The guidance sweep of `config.sweep` (experiment.sweep), its fills under OUT/sweep/."""
    method = next(m for m in config.methods if m.name == config.sweep.method)
    reference = reference_classifier(st, config) if config.consistency else None

    def fill_for(point: MethodConfig) -> ImageSet:
        reb = method_rebalancer(config, method, st.device).set_params(**{
            k: point.params[k] for k in ("guidance_w", "guidance_convention", "sampler")})
        cap = config.sweep.max_images_per_class
        if cap is not None:  # the first `cap` images of each class: the same images the full fill starts with
            counts = st.imbalanced.counts()
            reb.set_params(sampling_strategy={c: counts[c] + min(cap, n) for c, n in reb.plan(st.imbalanced).items()})
        return fill(reb, st.imbalanced, st.out_dir / "sweep" / point.name, _workdir(st, method), st.progress)

    def quality(fills: ImageSet) -> dict | None:
        if config.fid is None:
            return None
        domain = reference_classifier(st, config) if config.fid.features == "domain" else None
        q = quality_report(balanced_original(st), st.imbalanced.concat(fills), fills, config.fid, device=st.device,
                           domain_model=domain)
        return {"precision_recall": q["precision_recall"], "generated_fid": q["generated_fid"]["fid"],
                "features": q["features"]}

    return run_sweep(st, method, fill_for, reference, quality)


def method_fill(st: Stage, m: MethodConfig) -> ImageSet:
    """The method's fill images (none for an identity method); resumes a partial fill folder."""
    reb = method_rebalancer(st.config, m, st.device)
    n = sum(reb.plan(st.imbalanced).values())
    if n:
        console.print(f"[bold]fill[/] {m.name}: {n} images ({m.rebalancer}{', filtered' if m.filter else ''})")
    if m.filter is not None:
        return filtered_fill(reb, m.filter, st.imbalanced, st.out_dir / "fills" / m.name, _workdir(st, m),
                             st.out_dir / "judges", st.device, st.progress)
    return fill(reb, st.imbalanced, st.out_dir / "fills" / m.name, _workdir(st, m), st.progress)


def train_and_evaluate(st: Stage, m: MethodConfig, classifier: str, seed: int, fills: ImageSet) -> dict:
    train = st.imbalanced.concat(fills, source=f"{m.name} rebalanced") if len(fills) else st.imbalanced
    cfg = m.train.replace(model=classifier)
    run_id = f"{m.name}--{classifier}--seed{seed}"
    console.print(f"[bold]train[/] {run_id} on {len(train)} images")
    # every fill image counts as added (oversampled copies too): `prior: real` then counts the real images only
    synthetic = torch.cat([torch.zeros(len(st.imbalanced), dtype=torch.bool), torch.ones(len(fills), dtype=torch.bool)])
    clf = train_classifier(
        train, cfg, device=st.device, seed=seed, checkpoint_dir=st.out_dir / "checkpoints" / run_id,
        progress=st.progress, synthetic=synthetic,
    )
    pred = clf.predict(st.test.images)
    metrics = classification_metrics(st.test.labels, pred, st.test.class_names, train_counts=st.imbalanced.counts())
    extra = {}
    if st.validation is not None:  # what every choice is made on
        val = classification_metrics(st.validation.labels, clf.predict(st.validation.images), st.test.class_names)
        extra["validation"] = {"accuracy": val["accuracy"], "balanced_accuracy": val["balanced_accuracy"],
                               "macro_f1": val["macro_f1"]}
    return {
        "method": m.name, "rebalancer": m.rebalancer, "generative": rebalancer_class(m.rebalancer).generative,
        "classifier": classifier, "seed": seed, **extra,
        "accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"], "per_class_f1": metrics["per_class_f1"], "metrics": metrics,
        "train_images": len(train), "train_seconds": clf.train_seconds, "device": describe(st.device),
    }


def reference_classifier(st: Stage, config: ExperimentConfig) -> TrainedClassifier:
    """A classifier trained on *balanced real* data, used to check that generated images show their class
    (and, for domain-FID, as the feature network). Trained once per run folder (checkpointed)."""
    if st.reference is not None:
        return st.reference
    ref = st.train_full
    n = config.reference_images_per_class
    if n is not None:
        ref = make_imbalanced(ref, [min(n, c) for c in ref.counts()], "first", 0, "balanced reference")
    cfg = config.reference_train
    console.print(f"[bold]train[/] reference classifier on {len(ref)} balanced real images")
    st.reference = train_classifier(
        ref, cfg, device=st.device, seed=0, checkpoint_dir=st.out_dir / "checkpoints" / "reference", progress=st.progress
    )
    st.reference.save(st.out_dir / "reference-classifier")  # for `diffbalance fid --features domain`
    return st.reference


def consistency_table(st: Stage, config: ExperimentConfig, generated: dict[str, ImageSet]) -> dict:
    ref = reference_classifier(st, config)
    real = class_consistency(ref.predict, st.test)  # the reference's own accuracy per class: the ceiling
    table = {"reference": {"images": len(st.train_full) if config.reference_images_per_class is None
                           else config.reference_images_per_class * st.train_full.num_classes, "test": real}}
    for name, fills in generated.items():
        table[name] = class_consistency(ref.predict, fills)
    return table


def quality_table(st: Stage, generated: dict[str, ImageSet]) -> dict:
    """The paper's Table 2 (FID of the rebalanced set vs the original balanced train set) and what it hides."""
    cfg = st.config.fid
    domain = reference_classifier(st, st.config) if cfg.features == "domain" else None
    return {
        name: quality_report(balanced_original(st), st.imbalanced.concat(fills), fills, cfg, device=st.device,
                             domain_model=domain)
        for name, fills in generated.items()
    }


def balanced_original(st: Stage) -> ImageSet:
    """The original balanced training images the rebalanced set is compared with: per class, as many real images
    as the rebalanced set holds (the first ones in original order). For the paper's CIFAR-10 protocol that is the
    whole 50,000-image training set."""
    want = [min(n + a, have) for n, a, have in zip(st.imbalanced.counts(), st.add, st.train_full.counts())]
    return make_imbalanced(st.train_full, want, "first", 0, "original balanced")


# --- helpers --------------------------------------------------------------------------------------
def _workdir(st: Stage, m: MethodConfig) -> Path:
    """Generators trained on the fly live under a hash of their training settings, so methods that differ only
    in how they sample (e.g. cfg w = 0.1 and w = 7.5) share one trained model."""
    key = json.dumps({"rebalancer": m.rebalancer, "train": m.params.get("train", {}), "data": st.config.to_dict()["data"],
                      "imbalance": st.config.to_dict()["imbalance"]}, sort_keys=True)
    return st.out_dir / "generators" / f"{m.rebalancer}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _load_previous(st: Stage) -> dict:
    """Runs already finished in this folder with the same config are kept; anything else starts afresh."""
    fresh = {
        "dataset": {
            "name": st.config.data.name, "profile": st.config.imbalance.profile,
            "class_names": list(st.imbalanced.class_names), "train_counts": st.imbalanced.counts(),
            "fill_counts": st.add, "test_count": len(st.test), "test_counts": st.test.counts(),
            "image_shape": list(st.imbalanced.images.shape[1:]),
            **({"validation_counts": st.validation.counts()} if st.validation is not None else {}),
        },
        "runs": [],
        "config": st.config.to_dict(),
        "versions": _versions(),
        "device": describe(st.device),
    }
    path = st.out_dir / "results.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            return fresh
        if _same_config(old.get("config"), st.config) and old.get("dataset") == fresh["dataset"]:
            fresh["runs"] = old.get("runs", [])
    return fresh


def _same_config(saved: dict | None, config: ExperimentConfig) -> bool:
    """A saved config (possibly written by an older version, in a shorter form) that resolves to `config`."""
    try:
        return ExperimentConfig.from_dict(saved or {}) == config
    except DiffbalanceError:
        return False


def _find_run(results: dict, method: str, classifier: str, seed: int) -> dict | None:
    for r in results["runs"]:
        if (r["method"], r["classifier"], r["seed"]) == (method, classifier, seed):
            return r
    return None


def _versions() -> dict:
    import diffusers
    import torchvision

    import diffbalance

    return {"diffbalance": diffbalance.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "diffusers": diffusers.__version__}
