"""Run methods × classifiers × seeds on one imbalanced set, then report.

Stages, each resumable (a rerun of the same config in the same folder redoes only what is missing):
    data → imbalance → fill (per method) → train classifiers (per method × classifier × seed) → evaluate → report

Run folder:
    config.resolved.json   the full config, written before any work
    fills/<method>/        PNG ImageFolder + manifest of each method's fill images (filtered ones: + candidates/)
    sweep/                 the guidance sweep's fills and sweep.json
    generators/<hash>/     generators trained on the fly (shared by methods with the same training config)
    judges/                the filters' judge classifiers
    checkpoints/<run>/     classifier checkpoints
    results.json           rewritten (atomically) after every finished run
    report.md, figures/    written at the end
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from diffbalance.atomic import output_lock, remove_stale_temps, write_json
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.device import describe
from diffbalance.evaluate.metrics import classification_metrics
from diffbalance.experiment.config import ExperimentConfig, MethodConfig
from diffbalance.errors import DiffbalanceError
from diffbalance.experiment.fills import shared_fills, sweep_table
from diffbalance.experiment.filter import acceptance, kept_and_rejected
from diffbalance.experiment.quality import consistency_table, quality_table
from diffbalance.experiment.stage import Stage, prepare_stage
from diffbalance.experiment.sweep import reuse_chosen_fill
from diffbalance.progress import console
from diffbalance.rebalance.registry import rebalancer_class
from diffbalance.report.verdict import paired_verdict
from diffbalance.report.write import write_report


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
    fills = shared_fills(st, methods)
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
