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
    runs/<run>.json        under torchrun with parallel: runs, a run one rank finished (gathered at the end)
    results.json           rewritten (atomically) after every finished run, and when an invocation stops early;
                           invocations: each invocation's device (threads), processes and wall time per stage,
                           stage_seconds: their sum per stage;
                           each run's training curve ("history"), the generators' ("generators": folder → curve)
    report.md, figures/    written at the end

Under torchrun every rank runs the same stages; rank 0 alone writes the shared files (diffbalance.infra.distributed).
With `log_dir` the curves also go to TensorBoard event files there (infra.tensorboard): each classifier run's as it
trains, each generator's once the fills are made (generator/<folder>/...).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from diffbalance.infra import distributed
from diffbalance.infra.atomic import check_writable, write_json
from diffbalance.classify.config import TrainConfig
from diffbalance.infra.device import describe
from diffbalance.infra.errors import DiffbalanceError, require_type
from diffbalance.infra.paths import inside
from diffbalance.infra.progress import console
from diffbalance.infra.tensorboard import Scalars, scalar_log, summary_writer_class
from diffbalance.experiment.config import RESULT_FREE, ExperimentConfig, ReplicateConfig
from diffbalance.evaluate.ledger import record_scoring, set_digest
from diffbalance.experiment.fills import fill_draws, generator_histories, make_sweeper, shared_fills, sweep_table
from diffbalance.experiment.filter import acceptance, kept_and_rejected
from diffbalance.experiment.grid import _config_key, parallel_mode, previous_parts, train_runs
from diffbalance.experiment.replicate import draw_config, finished_run, replication_table
from diffbalance.experiment.selection import best_rows, row_scores
from diffbalance.experiment.quality import consistency_table, quality_table
from diffbalance.experiment.stage import Stage, prepare_stage
from diffbalance.experiment.sweep import apply_tuning, reuse_chosen_fill
from diffbalance.report.verdict import comparisons, paired_verdict
from diffbalance.report.study import write_study_summary
from diffbalance.report.timing import invocations, stage_totals
from diffbalance.report.write import write_report


def run_experiment(config: ExperimentConfig, out_dir: Path, progress: bool = True) -> dict:
    """The whole pipeline; returns the results dict also written to `out_dir/results.json`. Nothing is written
    before every input is checked; one job at a time writes a run folder; what a killed run left half-written
    is removed before it resumes. Under torchrun every rank calls it alike (module docstring of
    diffbalance.infra.distributed): rank 0 writes the shared files, fills are sharded, and classifier runs are spread
    over the ranks or trained with DDP (`config.parallel`)."""
    require_type(config, ExperimentConfig, "config",
                 "an ExperimentConfig (ExperimentConfig.from_dict({...}) or load_config(path))")
    require_type(out_dir, (str, os.PathLike), "out_dir", "a folder path")
    out_dir = Path(out_dir)
    clock = StageClock()
    if config.log_dir is not None:
        summary_writer_class()  # a missing tensorboard package fails here, before any work
        check_writable(Path(config.log_dir), "log folder", "--log-dir")  # and an unwritable log folder
    with clock("prepare"):
        st = prepare_stage(config, out_dir, progress)
    with distributed.held_output(st.out_dir), scalar_log(config.log_dir) as scalars:
        distributed.on_main(lambda: write_json(st.out_dir / "config.resolved.json", config.to_dict()))
        return _run_stages(st, clock, scalars)


def run_study(experiments: list[tuple[str, ExperimentConfig]], out_dir: Path, progress: bool = True) -> list[dict]:
    """Every experiment of a study (`load_experiments`) into OUT/<name> (OUT itself for a single unnamed one), then,
    for several, OUT/summary.md side by side (report.study). Every experiment's inputs — folders, data, methods — are
    checked before the first one starts, so a bad second profile fails in seconds, not after the first has run."""
    out_dir = Path(out_dir)
    folders = [inside(out_dir, name, "profile") if name else out_dir for name, _ in experiments]
    experiments = [(name, _profile_log_dir(config, name)) for name, config in experiments]
    if len(experiments) > 1:  # (one experiment is checked by run_experiment before it writes anything)
        for (_, config), folder in zip(experiments, folders):
            prepare_stage(config, folder, progress=False)
    done = [run_experiment(config, folder, progress) for (_, config), folder in zip(experiments, folders)]
    if len(experiments) > 1:
        profiles = [(name, results, config.to_dict()) for (name, config), results in zip(experiments, done)]
        distributed.on_main(lambda: write_study_summary(out_dir, profiles))
    return done


def _profile_log_dir(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """A study's profile logs its curves to LOG_DIR/<name>, so the profiles' tags do not mix."""
    return config.replace(log_dir=str(Path(config.log_dir) / name)) if name and config.log_dir else config


class StageClock:
    """Wall seconds per stage of this invocation (`with clock("fills"): ...`), a stage stopped early included;
    each finished stage says one line ("stage fills: 62 s")."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + took, 2)
        console.print(f"[bold]stage[/] {stage}: {took:.0f} s")


def _run_stages(st: Stage, clock: StageClock, scalars: Scalars | None = None) -> dict:
    """The stages after `prepare`, this invocation recorded in results["invocations"] beside the earlier ones. An
    invocation stopped early (Ctrl-C, a failed stage) writes results.json on its way out, so its time is kept
    even before its first classifier finishes; rank 0 alone, with no collective (the other ranks may be gone)."""
    results = distributed.on_main(lambda: _load_previous(st))
    results["invocations"] = [*results.get("invocations", []), _invocation(st, clock)]
    try:
        return _stages(st, clock, results, scalars)
    except BaseException:
        if distributed.current().is_main:
            with contextlib.suppress(Exception):  # the error on its way out is the one to report
                write_json(st.out_dir / "results.json", results)
        raise


def _invocation(st: Stage, clock: StageClock) -> dict:
    """This invocation's record: where it ran, and its seconds per stage — the clock's own dict, so every write of
    results.json holds the stages finished so far."""
    return {"device": describe(st.device), "processes": distributed.current().world_size,
            "stage_seconds": clock.seconds}


def _stages(st: Stage, clock: StageClock, results: dict, scalars: Scalars | None) -> dict:
    config = st.config
    methods = list(config.methods)
    sweeper = make_sweeper(st) if st.selects else None
    if config.sweep:  # the chosen knobs replace the tuned methods' own before they run
        with clock("sweep"):
            results["sweep"] = sweep_table(st, sweeper)
        unfiltered = {m.name for m in methods if m.filter is None}
        for sweep in results["sweep"]["sweeps"]:
            if sweep["method"] in unfiltered and sweep["chosen_point"] is not None:
                distributed.on_main(lambda: reuse_chosen_fill(st.out_dir, sweep))
        methods = apply_tuning(methods, results["sweep"])
    with clock("fills"):
        fills = shared_fills(st, methods)
        draws = fill_draws(st, methods, fills)
    curves = distributed.on_main(lambda: generator_histories(st.out_dir))
    if curves:
        results["generators"] = curves
    for name, curve in (curves or {}).items():
        if scalars is not None:
            scalars.write(f"generator/{name}", curve, step_key="step")
    with clock("classifiers"):
        train_runs(st, methods, fills, results, scalars, draws)
    generated = {m.name: fills[m.name] for m in config.methods if len(fills[m.name])}
    filtered = {m.name: kept_and_rejected(st.out_dir / "fills" / m.name, st.imbalanced.class_names)
                for m in config.methods if m.filter is not None and m.name in generated}
    if filtered:
        results["filter"] = {name: acceptance(st.out_dir / "fills" / name, list(st.imbalanced.class_names))
                             for name in filtered}
    if generated and config.consistency:
        with clock("consistency"):
            results["consistency"] = consistency_table(st, generated)
    if generated and config.fid is not None:
        with clock("quality"):
            results["quality"] = quality_table(st, generated)
    if st.selects:
        with clock("selection"):
            results["selection"] = {clf: row_scores(st, sweeper, methods, results.get("sweep"), results["runs"], clf)
                                    for clf in config.classifier_names()}
        results["verdict"] = {clf: _verdict(config, results["runs"], results["selection"][clf], clf)
                              for clf in config.classifier_names()}
        results["ledger"] = distributed.on_main(lambda: _ledger(st))
    if config.compare_with:
        rows = config.row_names()
        results["comparisons"] = {clf: comparisons(results["runs"], clf, list(config.compare_with), rows)
                                  for clf in config.classifier_names()}
    if config.replicate is not None and any((results.get("verdict") or {}).values()):
        with clock("replication"):  # the chosen recipes frozen, re-run on fresh draws (experiment.replicate)
            results["replication"] = replicate(st.out_dir, config.replicate, st.progress, config, results)
    with clock("report"):
        results["invocations"][-1]["stage_seconds"] = dict(clock.seconds)  # a copy: the results as written
        results["stage_seconds"] = stage_totals(results["invocations"])
        distributed.on_main(lambda: _write_outputs(st, results, generated, filtered))
    return results


def _verdict(config: ExperimentConfig, runs: list[dict], scores: dict[str, dict], classifier: str) -> dict | None:
    """The best generative against the best non-generative row (experiment.selection), paired by seed on test."""
    gen, base = best_rows(scores)
    how = config.validation.describe()
    if base is None:
        return None
    if gen is None:
        fell_back = [m for m, r in scores.items() if r["generative"] and r["fell_back"]]
        if not fell_back:
            return None
        return {"classifier": classifier, "generative": None, "non_generative": base, "fell_back": fell_back,
                "verdict": None, "chosen_on": how}
    drawn = config.fill_draws == "per_seed" and len(config.seeds) > 1
    covers = ("classifier seeds", *(["fill draws"] if drawn else []),
              *(["generators"] if drawn and config.generator_seeds else []))
    verdict = paired_verdict(runs, classifier, generative=gen, non_generative=base, chosen_on=how,
                             variance_covers=covers)
    return {**verdict, "scores": {gen: scores[gen], base: scores[base]}}


def _ledger(st: Stage) -> dict:
    """This run's config recorded against its test set in the cache's ledger; how many configs it has seen."""
    digest = set_digest(st.test.images, st.test.labels)
    return {"test_set": digest, "configs_scored": record_scoring(digest, _config_key(st.config), st.config.name)}


def _write_outputs(st: Stage, results: dict, generated: dict, filtered: dict) -> None:
    config = st.config
    write_json(st.out_dir / "results.json", results)
    write_report(st.out_dir, results, st.imbalanced, generated, config.to_dict(), train_defaults=TrainConfig().to_dict(),
                 filtered=filtered)


def _load_previous(st: Stage) -> dict:
    """Runs already finished in this folder with the same config are kept; anything else starts afresh."""
    fresh = {
        "dataset": {
            "name": st.config.data.name, "profile": st.config.imbalance.profile,
            "class_names": list(st.imbalanced.class_names), "train_counts": st.imbalanced.counts(),
            "images_to_add": st.images_to_add, "test_count": len(st.test), "test_counts": st.test.counts(),
            "image_shape": list(st.imbalanced.images.shape[1:]),
            **({"validation_counts": st.validation.counts()} if st.validation is not None else {}),
        },
        "runs": [],
        "config": st.config.to_dict(),
        "versions": _versions(),
        "device": describe(st.device),
        "processes": distributed.current().world_size,
        "parallel": parallel_mode(st.config, max(st.imbalanced.images.shape[-2:])),
    }
    path = st.out_dir / "results.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            return fresh
        if _same_config(old.get("config"), st.config) and old.get("dataset") == fresh["dataset"]:
            fresh["runs"] = old.get("runs", [])
            fresh["invocations"] = invocations(old)  # (older results.json: its stage totals as one invocation)
    have = {(r["method"], r["classifier"], r["seed"]) for r in fresh["runs"]}
    fresh["runs"] += [r for r in previous_parts(st) if (r["method"], r["classifier"], r["seed"]) not in have]
    return fresh


def _same_config(saved: dict | None, config: ExperimentConfig) -> bool:
    """A saved config (possibly written by an older version, in a shorter form) that resolves to `config`."""
    try:
        plain = dict.fromkeys(RESULT_FREE)
        saved = {"fill_draws": "shared", **(saved or {})}  # runs saved before per-seed draws shared one fill
        return ExperimentConfig.from_dict(saved).replace(**plain) == config.replace(**plain)
    except DiffbalanceError:
        return False


def _versions() -> dict:
    import diffusers
    import torchvision

    import diffbalance

    return {"diffbalance": diffbalance.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "diffusers": diffusers.__version__}


def replicate(run_dir: Path, cfg: ReplicateConfig, progress: bool = True, config: ExperimentConfig | None = None,
              results: dict | None = None) -> dict:
    """Every draw (resuming finished ones), then RUN/replication.json: per classifier, the run's verdict and each
    draw's, and whether it replicated. `config`/`results`: the run's, when the caller holds them (else read from
    RUN, which must be a finished run)."""
    run_dir = Path(run_dir)
    if config is None or results is None:
        config, results = finished_run(run_dir)
    drawn = []
    for d in range(cfg.draws):
        draw = draw_config(config, results, d, cfg)
        console.print(f"[bold]replicate[/] draw {d}: {draw.imbalance.selection} seed {draw.imbalance.seed}, "
                      f"class order {list(draw.imbalance.order or [])}")
        folder = f"draw{d}-seed{draw.imbalance.seed}" + ("" if cfg.rotate else "-fixed")
        drawn.append((draw, run_experiment(draw, inside(run_dir / "replication", folder, "draw"), progress)))
    table = replication_table(results, [(draw, res) for draw, res in drawn])
    body = {"draws": cfg.to_dict(), "verdicts": table}
    distributed.on_main(lambda: write_json(run_dir / "replication.json", body))
    return body
