"""Replication: a finished run's verdicts re-tested on fresh draws of the same imbalance, with nothing chosen again.

A verdict that rests on one draw of the data, one validation split and one test set may be luck of that draw. Here
the run's recipes are frozen — every sweep's chosen knobs written into its methods, no sweep, no selection — and the
verdict's two methods are trained again on `draws` fresh imbalanced training sets:
    draw d      imbalance.selection random with seed `seed + d` (other images of every class), and the class order
                rotated by (d + 1)·⌈C / 3⌉ places (draws 0 and 1 make the second and the last third of the classes
                the rare ones), so the profile's counts are the same but which images and which classes are not
    seeds       new classifier seeds (the run's seeds + 1000·(d + 1)) and a new fill seed, so no classifier, fill
                or generator of the run is reused
    validation  a held-out split is kept (the final runs trained without it, so the replicas do too); under
                cross-validation the replicas train on every image, as the refit did
`experiment.runner.replicate` runs the draws. A verdict replicates on a draw when the draw's verdict (experiment.runner / report.verdict: the paired 95 % interval
on test accuracy) is the same word as the run's (better, worse, or inconclusive again). Each draw is a run folder
of its own under
RUN/replication/draw<d>-seed<s>[-fixed] (named by what makes it, so it resumes under any number of draws), and
RUN/replication.json holds the table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from diffbalance.infra.errors import DiffbalanceError
from diffbalance.experiment.config import ExperimentConfig, ReplicateConfig
from diffbalance.experiment.sweep import apply_tuning
from diffbalance.report.verdict import completed, paired_difference

SEED_STEP = 1000  # draw d's classifier and fill seeds: the run's + SEED_STEP·(d + 1)


def draw_config(config: ExperimentConfig, results: dict, d: int, cfg: ReplicateConfig) -> ExperimentConfig:
    """Draw d's config: the run's recipes frozen (sweeps' choices in place, no sweep), only the verdicts' methods,
    a fresh random draw of the same profile, new classifier and fill seeds (module docstring)."""
    keep = sorted({v[k] for v in (results.get("verdict") or {}).values() if v
                   for k in ("generative", "non_generative") if v.get(k)})
    if not keep:
        raise DiffbalanceError("this run has no verdict to replicate (no validation section, or no method of one kind)",
                               "replicate a run whose report has a verdict")
    methods = tuple(m for m in apply_tuning(list(config.methods), results.get("sweep")) if m.name in keep)
    names = [str(c) for c in (config.imbalance.order or range(len(results["dataset"]["class_names"])))]
    order = config.imbalance.order
    if cfg.rotate:
        step = (d + 1) * math.ceil(len(names) / 3) % len(names)  # a draw's own, whatever the number of draws
        order = tuple(_as_index(c) for c in names[step:] + names[:step])
    imbalance = config.imbalance.replace(selection="random", seed=cfg.seed + d, order=order)
    validation = None if config.validation is None or config.validation.cross_validated else config.validation
    shift = SEED_STEP * (d + 1)
    return config.replace(name=f"{config.name} — replication draw {d}", methods=methods, sweep=None,
                          validation=validation, imbalance=imbalance, seeds=tuple(s + shift for s in config.seeds),
                          fill_seed=config.fill_seed + shift, compare_with=(), ceiling=False, replicate=None)


def _as_index(c: str) -> int | str:
    return int(c) if c.lstrip("-").isdigit() else c


def replication_table(results: dict, drawn: list[tuple[ExperimentConfig, dict]]) -> dict[str, dict]:
    """{classifier: {original verdict, per draw: the same pair's paired difference on its test set, replicated}}."""
    out = {}
    for clf, v in (results.get("verdict") or {}).items():
        if not v or not v.get("generative"):
            continue
        v = completed(v) if v.get("differences") else v  # a verdict written before the interval: its word now
        rows = []
        for draw, res in drawn:
            c = paired_difference(res["runs"], clf, v["generative"], v["non_generative"])
            rows.append({"imbalance_seed": draw.imbalance.seed, "order": list(draw.imbalance.order or []),
                         "seeds": c["seeds"], "differences": c["differences"], "mean_difference": c["mean_difference"],
                         "std_difference": c["std_difference"], "ci95": c["ci95"], "verdict": c["verdict"],
                         "seeds_better": c["seeds_better"], "replicated": c["verdict"] == v.get("verdict")})
        out[clf] = {"generative": v["generative"], "non_generative": v["non_generative"], "verdict": v.get("verdict"),
                    "mean_difference": v.get("mean_difference"), "ci95": v.get("ci95"), "draws": rows,
                    "replicated": sum(r["replicated"] for r in rows), "of": len(rows)}
    return out


def finished_run(run_dir: Path) -> tuple[ExperimentConfig, dict]:
    """The config and results of a finished run folder, or one line saying why not."""
    paths = [run_dir / "config.resolved.json", run_dir / "results.json"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DiffbalanceError(f"{run_dir} is not a finished diffbalance run (no {', '.join(missing)})",
                               "give the --out folder of a finished `diffbalance run`")
    try:
        config, results = (json.loads(p.read_text()) for p in paths)
    except (OSError, ValueError):
        raise DiffbalanceError(f"{run_dir}'s config.resolved.json or results.json cannot be read",
                               "run it again to finish it") from None
    return ExperimentConfig.from_dict(config), results
