"""The fill images of every method of a run: plain, filtered, tuned by the guidance sweep, shared by ablation rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from diffbalance.infra import distributed
from diffbalance.data.imageset import ImageSet
from diffbalance.evaluate.fid.protocol import quality_report
from diffbalance.evaluate.ledger import set_digest
from diffbalance.experiment.config import MethodConfig
from diffbalance.experiment.filter import filtered_fill
from diffbalance.generate.cfg.generator import GENERATOR_FILE
from diffbalance.experiment.sweep import Sweeper, run_sweeps, sweep_fill_folder
from diffbalance.infra.paths import inside
from diffbalance.infra.progress import console
from diffbalance.rebalance.store import copy_fill, fill
from diffbalance.experiment.stage import Stage, fill_draw_seed, fill_folder, method_rebalancer
from diffbalance.imbalance.validation import Fold
from diffbalance.experiment.quality import balanced_original, reference_classifier, run_embedder


def sweep_table(st: Stage, sweeper: Sweeper) -> dict:
    """Every sweep of the config's `sweep` (experiment.sweep), their fills under OUT/sweep/."""
    return run_sweeps(sweeper, st.config.sweep, {m.name: m for m in st.config.methods})


def make_sweeper(st: Stage) -> Sweeper:
    """What scores sweep points and cross-validated rows: fills per fold, quick classifiers, the shared memo."""
    config = st.config
    reference = reference_classifier(st) if config.consistency and config.sweep else None

    def fill_for(method: MethodConfig, knobs: dict, folder: str, cap: int | None, fold: Fold) -> ImageSet:
        reb = method_rebalancer(config, method, st.device)
        if knobs:
            reb.set_params(**knobs, guidance_convention="ho")
        workdir = _workdir(st, method)
        if fold.count > 1:  # cross-validation: the fold's own fill, from its training part alone
            if reb.generative and config.validation.generators == "shared":
                reb.set_params(**shared_generator(st, method))
            else:
                workdir = workdir / fold.name  # a generator that never saw the held-out fold
        if cap is not None:  # the first `cap` images of each class: the same images the full fill starts with
            counts = fold.train.counts()
            reb.set_params(sampling_strategy={c: counts[c] + min(cap, n) for c, n in reb.plan(fold.train).items()})
        return fill(reb, fold.train, sweep_fill_folder(st.out_dir, folder, fold), workdir, st.progress)

    def quality(fills: ImageSet) -> dict | None:
        if config.fid is None:
            return None
        q = quality_report(balanced_original(st), (st.imbalanced, fills), fills, config.fid, device=st.device,
                           embedder=run_embedder(st))
        return {"precision_recall": q["precision_recall"], "generated_fid": q["generated_fid"]["fid"],
                "features": q["features"]}

    sweeper = Sweeper(st, fill_for, reference, quality if config.sweep else None)
    sweeper.load()
    return sweeper


def shared_generator(st: Stage, m: MethodConfig) -> dict:
    """The parameters that make a method's fold fills use the generator of its final fill (trained on every training
    image, into the same folder the final fill uses): `validation.generators: shared`."""
    reb = method_rebalancer(st.config, m, st.device)
    checkpoint = reb.trained_checkpoint(st.imbalanced, _workdir(st, m), st.device)
    return {} if checkpoint is None else {"checkpoint": str(checkpoint)}


def fill_key(m: MethodConfig) -> str:
    """What makes a method's fill images: rebalancer, parameters, filter (rows equal in it share one fill)."""
    return json.dumps({"rebalancer": m.rebalancer, "params": m.params,
                       "filter": m.filter.to_dict() if m.filter else None}, sort_keys=True, default=str)


def shared_fills(st: Stage, methods: list[MethodConfig]) -> dict[str, ImageSet]:
    """Every method's fill; methods that differ only in training (same rebalancer, parameters and filter: ablation
    rows) share one, copied to each method's folder so every fills/<method> is complete on its own."""
    fills: dict[str, ImageSet] = {}
    first: dict[str, str] = {}
    for m in methods:
        key = fill_key(m)
        if key in first and m.rebalancer != "none":
            distributed.on_main(lambda: copy_fill(st.out_dir / "fills" / first[key], st.out_dir / "fills" / m.name))
        first.setdefault(key, m.name)
        fills[m.name] = method_fill(st, m)
    return fills


def method_fill(st: Stage, m: MethodConfig, seed: int | None = None) -> ImageSet:
    """The method's fill images (none for an identity method); resumes a partial fill folder. `seed`: a further
    classifier seed's own draw (`fill_draws: per_seed`), in OUT/fill-draws/<method>/seed<k>; None: the run's fill."""
    reb = method_rebalancer(st.config, m, st.device)
    folder = st.out_dir / "fills" / m.name
    if seed is not None:
        reb.set_params(random_state=fill_draw_seed(st.config.fill_seed, seed))
        inside(inside(st.out_dir / "fill-draws", m.name, "method"), f"seed{seed}", "seed")  # no link out of OUT
        folder = fill_folder(st.out_dir, m.name, seed)
        trains = getattr(reb, "train", None)
        if st.config.generator_seeds and hasattr(trains, "seed") and getattr(reb, "checkpoint", None) is None:
            # its own generator too: another training seed (initial weights, batches, noise) → its own folder
            reb.set_params(train=trains.replace(seed=fill_draw_seed(trains.seed, seed)))
    n = sum(reb.plan(st.imbalanced).values())
    if n:
        console.print(f"[bold]fill[/] {m.name}: {n} images ({m.rebalancer}{', filtered' if m.filter else ''}"
                      f"{'' if seed is None else f', the draw of classifier seed {seed}'})")
    if m.filter is not None:
        return filtered_fill(reb, m.filter, st.imbalanced, folder, _workdir(st, m), st.out_dir / "judges", st.device,
                             st.progress)
    return fill(reb, st.imbalanced, folder, _workdir(st, m), st.progress)


def fill_draws(st: Stage, methods: list[MethodConfig], fills: dict[str, ImageSet]) -> dict[tuple[str, int], ImageSet]:
    """With `fill_draws: per_seed`, {(method, classifier seed): its fill} for every seed after the first (the first
    trains on the run's fill, `fills`, so a sweep's chosen fill is still reused); {} with one shared draw. Methods
    that add no image, and rows with the same fill (ablations), draw once."""
    if st.config.fill_draws != "per_seed":
        return {}
    out: dict[tuple[str, int], ImageSet] = {}
    made: dict[tuple[str, int], tuple[str, ImageSet]] = {}
    for m in methods:
        if not len(fills[m.name]):
            continue
        key = fill_key(m)
        for seed in st.config.seeds[1:]:
            if (key, seed) not in made:
                made[(key, seed)] = (m.name, method_fill(st, m, seed))
            first, images = made[(key, seed)]
            if first != m.name:  # an ablation row: the same draw, copied so every draw folder is complete
                distributed.on_main(lambda: copy_fill(fill_folder(st.out_dir, first, seed),
                                                      fill_folder(st.out_dir, m.name, seed)))
            out[(m.name, seed)] = images
    return out


def _workdir(st: Stage, m: MethodConfig) -> Path:
    """Generators trained on the fly live under a hash of what they depend on — the rebalancer, its training
    settings and the training images themselves (pixels and labels, not the options that found them) — so methods
    that differ only in how they sample (e.g. cfg w = 0.1 and w = 7.5) share one trained model, and a data option
    added by a later release does not rename the folder of a generator already trained."""
    key = json.dumps({"rebalancer": m.rebalancer, "train": m.params.get("train", {}),
                      "images": set_digest(st.imbalanced.images, st.imbalanced.labels)}, sort_keys=True)
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
