"""The fill images of every method of a run: plain, filtered, tuned by the guidance sweep, shared by ablation rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from diffbalance.infra import distributed
from diffbalance.data.imageset import ImageSet
from diffbalance.evaluate.fid.protocol import quality_report
from diffbalance.experiment.config import MethodConfig
from diffbalance.experiment.filter import filtered_fill
from diffbalance.generate.cfg.generator import GENERATOR_FILE
from diffbalance.experiment.sweep import Sweeper, run_sweeps
from diffbalance.infra.progress import console
from diffbalance.rebalance.store import copy_fill, fill
from diffbalance.experiment.stage import Stage, method_rebalancer
from diffbalance.experiment.quality import balanced_original, reference_classifier, run_embedder


def sweep_table(st: Stage) -> dict:
    """Every sweep of the config's `sweep` (experiment.sweep), their fills under OUT/sweep/."""
    config = st.config
    reference = reference_classifier(st) if config.consistency else None

    def fill_for(method: MethodConfig, knobs: dict, folder: str, cap: int | None) -> ImageSet:
        reb = method_rebalancer(config, method, st.device).set_params(**knobs, guidance_convention="ho")
        if cap is not None:  # the first `cap` images of each class: the same images the full fill starts with
            counts = st.imbalanced.counts()
            reb.set_params(sampling_strategy={c: counts[c] + min(cap, n) for c, n in reb.plan(st.imbalanced).items()})
        return fill(reb, st.imbalanced, st.out_dir / "sweep" / folder, _workdir(st, method), st.progress)

    def quality(fills: ImageSet) -> dict | None:
        if config.fid is None:
            return None
        q = quality_report(balanced_original(st), (st.imbalanced, fills), fills, config.fid, device=st.device,
                           embedder=run_embedder(st))
        return {"precision_recall": q["precision_recall"], "generated_fid": q["generated_fid"]["fid"],
                "features": q["features"]}

    methods = {m.name: m for m in config.methods}
    return run_sweeps(Sweeper(st, fill_for, reference, quality), config.sweep, methods)


def shared_fills(st: Stage, methods: list[MethodConfig]) -> dict[str, ImageSet]:
    """Every method's fill; methods that differ only in training (same rebalancer, parameters and filter: ablation
    rows) share one, copied to each method's folder so every fills/<method> is complete on its own."""
    fills: dict[str, ImageSet] = {}
    first: dict[str, str] = {}
    for m in methods:
        key = json.dumps({"rebalancer": m.rebalancer, "params": m.params,
                          "filter": m.filter.to_dict() if m.filter else None}, sort_keys=True, default=str)
        if key in first and m.rebalancer != "none":
            distributed.on_main(lambda: copy_fill(st.out_dir / "fills" / first[key], st.out_dir / "fills" / m.name))
        first.setdefault(key, m.name)
        fills[m.name] = method_fill(st, m)
    return fills


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


def _workdir(st: Stage, m: MethodConfig) -> Path:
    """Generators trained on the fly live under a hash of their training settings, so methods that differ only
    in how they sample (e.g. cfg w = 0.1 and w = 7.5) share one trained model."""
    key = json.dumps({"rebalancer": m.rebalancer, "train": m.params.get("train", {}), "data": st.config.to_dict()["data"],
                      "imbalance": st.config.to_dict()["imbalance"]}, sort_keys=True)
    return st.out_dir / "generators" / f"{m.rebalancer}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def generator_histories(out_dir: Path) -> dict[str, list[dict]]:
    """{folder under OUT/generators: its training curve} of every generator the run trained (generator.json's
    "history", generate.cfg.train); generators given by `checkpoint:` were trained elsewhere and are not listed."""
    root, curves = Path(out_dir) / "generators", {}
    for info in sorted(root.glob(f"*/*/{GENERATOR_FILE}")):
        try:
            history = json.loads(info.read_text()).get("history")
        except (OSError, ValueError, AttributeError):
            continue
        if history:
            curves[info.parent.relative_to(root).as_posix()] = history
    return curves
