"""The classifier runs of an experiment: every (method, classifier, seed) of the grid, trained and evaluated.

Alone, or under torchrun with `parallel: ddp`, each run is trained by every rank (DDP) and results.json is
rewritten after each. With `parallel: runs`, rank r trains every world_size-th missing run by itself (small
models scale linearly that way), keeps each finished one in runs/<run>.json, and rank 0 gathers them into
results.json; a rerun at any world size picks the finished ones up from either place.

Each run dict holds its training curve ("history": classify.train's per-epoch records, validation accuracy
included when the config has a validation split); with a TensorBoard log (infra.tensorboard) the curves also go
there live, under <method>/<classifier>/seed<k>/{train,head}/..., rank 0 writing those that other ranks trained
once they are gathered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from diffbalance.infra import distributed
from diffbalance.infra.atomic import write_json
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import describe
from diffbalance.evaluate.metrics import classification_metrics
from diffbalance.experiment.config import CEILING, RESULT_FREE, ExperimentConfig, MethodConfig
from diffbalance.experiment.training_set import training_inputs
from diffbalance.experiment.stage import Stage, fill_draw_seed, fill_folder, run_name
from diffbalance.infra.progress import console
from diffbalance.infra.tensorboard import Scalars
from diffbalance.rebalance.registry import rebalancer_class

RUN_PARTS = "runs"  # runs/<method>--<classifier>--seed<k>.json: a run finished by one rank of a spread grid
RUNS_UP_TO_PIXELS = 64  # parallel: auto spreads whole runs for images up to this side, DDP above


def parallel_mode(config: ExperimentConfig, image_side: int) -> str:
    """How classifier runs use the ranks: "runs" (whole runs spread over them) or "ddp" (each run on all)."""
    if config.parallel != "auto":
        return config.parallel
    return "runs" if image_side <= RUNS_UP_TO_PIXELS else "ddp"


def train_runs(st: Stage, methods: list[MethodConfig], fills: dict[str, ImageSet], results: dict,
               scalars: Scalars | None = None, draws: dict[tuple[str, int], ImageSet] | None = None) -> None:
    """Every missing (method, classifier, seed) run, in grid order. Alone or with parallel: ddp each run is
    trained by every rank (DDP under torchrun) and results.json is rewritten after each; with parallel: runs
    rank r trains every world_size-th missing run by itself, keeps each finished one in runs/<run>.json, and
    rank 0 gathers them into results.json. `scalars`: the TensorBoard log the curves also go to (None: off).
    `draws`: {(method, seed): fill} where a seed trains on its own fill draw (experiment.fills.fill_draws)."""
    config = st.config
    rows = [*methods, *([ceiling_method(config)] if config.ceiling else [])]
    grid = [(m, clf, seed) for m in rows for clf in config.classifier_names() for seed in config.seeds]
    todo = [(m, clf, seed) for m, clf, seed in grid if find_run(results, m.name, clf, seed) is None]
    # the ceiling's training set is found once, for all its runs
    ceiling = ceiling_train_set(st) if any(m.name == CEILING for m, _, _ in todo) else None
    d = distributed.current()

    def run(m: MethodConfig, clf: str, seed: int, ddp: bool | None = None) -> dict:
        if m.name == CEILING:
            return train_and_evaluate(st, m, clf, seed, None, ddp=ddp, train=ceiling, scalars=scalars)
        drawn = (m.name, seed) in (draws or {})
        return train_and_evaluate(st, m, clf, seed, draws[(m.name, seed)] if drawn else fills[m.name], ddp=ddp,
                                  scalars=scalars, fill_dir=fill_folder(st.out_dir, m.name, seed if drawn else None),
                                  fill_random_state=fill_draw_seed(config.fill_seed, seed) if drawn else config.fill_seed)

    if d.active and parallel_mode(config, max(st.imbalanced.images.shape[-2:])) == "runs":
        def mine() -> list[dict]:
            done = []
            for m, clf, seed in distributed.shard(todo):
                done.append(run(m, clf, seed, ddp=False))
                write_json(_part_path(st, done[-1]), {"config": _config_key(st.config), "run": done[-1]})
            return done

        parts = distributed.gather(distributed.agree(mine))
        for run_dict in (r for part in parts[1:] for r in part):  # rank 0 logged its own runs as they trained
            if scalars is not None:
                scalars.write(run_prefix(run_dict), run_dict["history"])
        finished = [r for part in parts for r in part]
        results["runs"] = _in_grid_order(results["runs"] + finished, grid)
        distributed.on_main(lambda: _save_runs(st, results))
        return
    for m, clf, seed in todo:
        results["runs"].append(run(m, clf, seed))
        results["runs"] = _in_grid_order(results["runs"], grid)
        distributed.on_main(lambda: write_json(st.out_dir / "results.json", results))


def _save_runs(st: Stage, results: dict) -> None:
    """results.json with every run, then the per-run files it now holds are removed."""
    write_json(st.out_dir / "results.json", results)
    for path in (st.out_dir / RUN_PARTS).glob("*.json"):
        path.unlink(missing_ok=True)


def _part_path(st: Stage, run: dict) -> Path:
    return st.out_dir / RUN_PARTS / f"{run_name(run['method'], run['classifier'], run['seed'])}.json"


def _config_key(config: ExperimentConfig) -> str:
    """What identifies the runs' config; keys that change no result are left out (keys as before them)."""
    identity = {k: v for k, v in config.to_dict().items() if k not in RESULT_FREE}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def run_prefix(run: dict) -> str:
    """The TensorBoard tag prefix of a run: <method>/<classifier>/seed<k>."""
    return f"{run['method']}/{run['classifier']}/seed{run['seed']}"


def _in_grid_order(runs: list[dict], grid: list) -> list[dict]:
    """Runs sorted as the grid (methods × classifiers × seeds) lists them, the same at any world size."""
    rank = {(m.name, clf, seed): k for k, (m, clf, seed) in enumerate(grid)}
    return sorted(runs, key=lambda r: rank.get((r["method"], r["classifier"], r["seed"]), len(rank)))


def ceiling_method(config: ExperimentConfig) -> MethodConfig:
    """The ceiling row: no rebalancing, the experiment's recipe, trained on the original balanced set."""
    return MethodConfig(name=CEILING, rebalancer="none", train=config.train)


def ceiling_train_set(st: Stage) -> ImageSet:
    """The original balanced training set without the validation images (matched by their pixels and label)."""
    if st.validation is None:
        return st.train_full
    held = {_image_key(x, y) for x, y in zip(st.validation.images, st.validation.labels)}
    keep = [k for k, (x, y) in enumerate(zip(st.train_full.images, st.train_full.labels))
            if _image_key(x, y) not in held]
    return st.train_full.subset(torch.tensor(keep), source="original balanced training set [validation held out]")


def _image_key(image: torch.Tensor, label: torch.Tensor) -> bytes:
    return hashlib.blake2b(image.numpy().tobytes() + bytes([int(label) % 256]), digest_size=16).digest()


def train_and_evaluate(st: Stage, m: MethodConfig, classifier: str, seed: int, fills: ImageSet | None,
                       ddp: bool | None = None, train: ImageSet | None = None, scalars: Scalars | None = None,
                       fill_dir: Path | None = None, fill_random_state: int = 0) -> dict:
    """Train one classifier on the method's rebalanced set, the imbalanced images + `fills` (or on `train`, real
    images given whole with `fills` None: the ceiling row), and evaluate it. `ddp`: as `train_classifier` (None:
    DDP over the ranks under torchrun; False: this rank alone). `scalars`: a TensorBoard log for its curve.
    `fill_dir`, `fill_random_state`: the fill's folder (its manifest) and base seed (a swap run's copies)."""
    cfg = st.config.run_recipe(m.train, classifier)
    inputs = {}
    if train is None:  # the real images + the fill, as the recipe asks (experiment.training_set)
        train, inputs = training_inputs(st.imbalanced, fills, cfg, fill_dir, st.config.sampling_strategy,
                                        fill_random_state)
    run_id = run_name(m.name, classifier, seed)
    console.print(f"[bold]train[/] {run_id} on {len(train)} images" + (" (a spread grid)" if ddp is False else ""))
    prefix = run_prefix({"method": m.name, "classifier": classifier, "seed": seed})
    clf = train_classifier(
        train, cfg, device=st.device, seed=seed, checkpoint_dir=st.out_dir / "checkpoints" / run_id,
        progress=st.progress and ddp is not False, ddp=ddp, validation=st.validation,
        on_epoch=None if scalars is None else scalars.recorder(prefix), **inputs,
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
        "classifier": classifier, "seed": seed, **extra, **({"ceiling": True} if m.name == CEILING else {}),
        "accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"], "per_class_f1": metrics["per_class_f1"], "metrics": metrics,
        "train_images": len(train), "train_seconds": clf.train_seconds, "device": describe(st.device),
        **({"feature_fill": clf.feature_fill} if clf.feature_fill is not None else {}),
        "history": clf.history,
    }


def find_run(results: dict, method: str, classifier: str, seed: int) -> dict | None:
    for r in results["runs"]:
        if (r["method"], r["classifier"], r["seed"]) == (method, classifier, seed):
            return r
    return None


def previous_parts(st: Stage) -> list[dict]:
    """Runs finished by the ranks of a spread grid that were not gathered yet (a crash before the end), for this
    config only."""
    key, runs = _config_key(st.config), []
    for path in sorted((st.out_dir / RUN_PARTS).glob("*.json")):
        try:
            part = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if part.get("config") == key:
            runs.append(part["run"])
    return runs
