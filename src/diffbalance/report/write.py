"""report.md: one page that says whether the rebalanced data trains a better classifier, and how it was measured.

The report takes plain data — the results dict, the image sets for the figures, and the resolved config as a dict
(`ExperimentConfig.to_dict()`) — and imports nothing from the stages that make them (experiment, cli, rebalance,
generate, classify), so data flows one way into it.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffbalance.infra.atomic import write_text
from diffbalance.infra.renames import renamed
from diffbalance.data.imageset import ImageSet
from diffbalance.report import figures, tables
from diffbalance.report.replication import replication_section
from diffbalance.report.timing import invocations, stage_totals, where_ran
from diffbalance.report.verdict import completed, interval_cell, paired_verdict, verdict_text


def write_report(out_dir: Path, results: dict, imbalanced: ImageSet, generated: dict[str, ImageSet], config: dict,
                 train_defaults: Mapping[str, Any] | None = None,
                 filtered: Mapping[str, tuple[ImageSet, ImageSet]] | None = None) -> Path:
    """Write `out_dir/report.md` and `out_dir/figures/`.

    config: the resolved config as plain data (keys name, imbalance, methods, classifiers, train, seeds, fill_seed,
    grid_images_per_class, ...). train_defaults: the classifier recipe's defaults (`TrainConfig().to_dict()`), so
    the report names only the recipe fields a run changed; None lists the whole recipe. filtered: per filtered
    method, its (kept, rejected) candidates, for the grids beside `results["filter"]`.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    ds = results["dataset"]
    runs = results["runs"]
    methods = [m["name"] for m in config["methods"]]
    methods += sorted({r["method"] for r in runs} - set(methods))  # rows beyond the methods: the ceiling
    classifiers = tables.classifier_labels(config)
    names = ds["class_names"]
    parts = [f"# diffbalance report — {config['name']}", _provenance(results, config)]

    parts += ["## Test accuracy (%)", "Mean ± std over seeds " + ", ".join(map(str, config["seeds"])) +
              f"; test set: {ds['test_count']} images. Rows = classifier, columns = method (the paper's Table 3).",
              tables.metric_table(runs, methods, classifiers, "accuracy")]
    parts += _verdict_section(results, methods, classifiers)
    parts += replication_section(results.get("replication"))
    parts += _comparison_section(results.get("comparisons") or {})
    parts += ["## Balanced accuracy (%)", tables.metric_table(runs, methods, classifiers, "balanced_accuracy")]
    parts += ["## Macro-F1 (%)", tables.metric_table(runs, methods, classifiers, "macro_f1")]
    for clf in classifiers:
        parts += [f"## Per-class F1 — {clf}",
                  "The paper's Table 4 layout; the training count of each class in brackets.",
                  tables.per_class_f1_table(runs, methods, clf, names, ds["train_counts"]),
                  f"![per-class F1](figures/per_class_f1_{clf}.png)",
                  f"### Many / medium / few-shot accuracy — {clf}",
                  "Groups by training count relative to the largest class: many ≥ 2/3·max, few ≤ 1/3·max.",
                  tables.shot_table(runs, methods, clf)]
        figures.per_class_f1_bars(runs, methods, clf, names, fig_dir / f"per_class_f1_{clf}.png")

    parts.append("## Confusion matrices (first classifier, first seed, rows normalised)")
    for m in methods:
        run = next((r for r in runs if r["method"] == m and r["classifier"] == classifiers[0]), None)
        if run:
            figures.confusion_matrix_figure(run["metrics"]["confusion_matrix"], names, f"{m} — {classifiers[0]}",
                                            fig_dir / f"confusion_{m}.png")
            parts.append(f"![confusion {m}](figures/confusion_{m}.png)")

    if generated:
        parts.append("## Fill images (first images of each filled class)")
        for m, fills in generated.items():
            figures.fill_grid(fills, config["grid_images_per_class"], f"{m}: fill images", fig_dir / f"fills_{m}.png")
            parts.append(f"### {m}\n![fills {m}](figures/fills_{m}.png)")
    if "sweep" in results:
        parts += _sweep_section(results["sweep"], fig_dir)
    if "filter" in results:
        parts += _filter_section(results["filter"], filtered or {}, config, fig_dir)
    parts += _feature_fill_section(runs, methods, names)
    if "consistency" in results:
        parts += ["## Class consistency (%)",
                  "Share of fill images that a reference classifier, trained on balanced real data, assigns to the "
                  "class they were made for. Its accuracy on the real test set is the ceiling.",
                  tables.consistency_table(results["consistency"], names)]
    if "quality" in results:
        parts += _quality_section(results["quality"])
    parts += _curves_section(results, methods, classifiers, fig_dir)
    parts += [_choices_section(config, train_defaults), _stage_section(results), _runs_section(runs)]
    path = out_dir / "report.md"
    write_text(path, "\n\n".join(p for p in parts if p) + "\n")
    return path


def _sweep_section(sweep: dict, fig_dir: Path) -> list[str]:
    """Each sweep: its stages, every point's knobs, fidelity, diversity, consistency and score (mean ± SE over folds
    × seeds), its margin over the point chosen before it in standard errors, the choice and a figure."""
    parts = ["## Sweeps", f"Each sweep is a staged search, one knob at a time (guidance w × sampler, then start, "
             f"strength, synthetic share), starting from the zero point (copies: oversampling itself) and chosen on "
             f"{sweep['chosen_on']}. Margin: the point's paired advantage over the point chosen before its stage, in "
             "standard errors (> 1 replaces it). Precision/recall and FID of the (first fold's) fills against the "
             "real images of their classes; consistency by the reference classifier (report only)."]
    for s in sweep["sweeps"]:
        rows, labels = [], []
        zero = s.get("zero_point")
        if zero in s["points"]:
            rows.append(["zero", zero, "–", "–", "copies", "–", "0", "", "", "", "",
                         _score(s["points"][zero]), "", " **(chosen)**" if s["chosen_point"] == zero else ""])
        for stage in s["stages"]:
            if "skipped" in stage:
                rows.append([stage["stage"], "–", "", "", "", "", "", "", "", "", "", "", "",
                             f"skipped: {stage['skipped']}"])
                continue
            for label in stage["points"]:
                p = s["points"][label]
                q = p.get("quality") or {}
                pr = q.get("precision_recall", {})
                margin = (stage.get("margins") or {}).get(label, {}).get("margin_se")
                begin = p.get("start", p.get("init"))  # a knob the method does not take: "–"
                rows.append([stage["stage"], label, _knob(p, "guidance_w"), p.get("sampler", "–"), begin,
                             "–" if begin == "noise" else _knob(p, "strength"), _knob(p, "synthetic_share", 1),
                             _fmt(pr.get("precision")), _fmt(pr.get("recall")), _fmt(q.get("generated_fid")),
                             _fmt(p.get("consistency"), 1), _score(p),
                             "–" if margin is None else f"{margin:+.2f} vs {stage.get('against')}",
                             " **(chosen)**" if label == s["chosen_point"] else ""])
                labels.append(label)
        name = f"sweep_{s['method']}.png"
        if labels:
            figures.sweep_figure([s["points"][lab] for lab in labels], labels, s["chosen_point"], fig_dir / name)
        chosen = ", ".join(f"{k} = {v}" for k, v in s["chosen"].items() if k != "guidance_convention")
        seeds = next(iter(s["points"].values()))["seeds"] if s["points"] else []
        over = s.get("margin_over_zero") or s.get("best_over_zero")
        margin = ("" if not over or over.get("margin_se") is None else
                  f" {'Chosen' if s.get('margin_over_zero') else 'Best'} point over the copies: "
                  f"{100 * over['mean']:+.2f} points, {over['margin_se']:+.2f} standard errors ({over['n']} paired splits).")
        parts += [f"### {s['method']}" + (f" (and {', '.join(s['also'])})" if s["also"] else ""),
                  f"Chosen: **{s['chosen_point']}** ({chosen}); quick-classifier seeds {seeds}.{margin}",
                  tables.markdown_table(["stage", "point", "w", "sampler", "init", "strength", "share", "precision",
                                         "recall", "FID (fills)", "consistency %", "score %", "margin (SE)", ""],
                                        rows)]
        if labels:
            parts.append(f"![sweep {s['method']}](figures/{name})")
        parts += _cv_results(s.get("cv_results"))
    return parts


def _cv_results(cv: dict | None) -> list[str]:
    """The sweep's scikit-learn-style `cv_results_`: every point's score on every (fold, seed) split, %."""
    if not cv or not cv.get("splits"):
        return []
    splits = cv["splits"]
    head = ["point", "rank", "mean", "std"] + [f"fold {s['fold']} seed {s['seed']}" for s in splits]
    rows = []
    for i, label in enumerate(cv["label"]):
        std = cv["std_test_score"][i]
        rows.append([label, str(cv["rank_test_score"][i]), f"{100 * cv['mean_test_score'][i]:.2f}",
                     "–" if std is None else f"{100 * std:.2f}"]
                    + ["–" if cv[f"split{j}_test_score"][i] is None else f"{100 * cv[f'split{j}_test_score'][i]:.2f}"
                       for j in range(len(splits))])
    return ["Per split (`cv_results` in results.json):", tables.markdown_table(head, rows)]


def _score(p: dict) -> str:
    """A point's mean score ± its standard error (older records: validation accuracy ± std), in %."""
    if "score" in p:
        se = p.get("score_se")
        return f"{100 * p['score']:.2f}" + (f" ± {100 * se:.2f}" if se is not None else "")
    std = p.get("validation_accuracy_std")
    return f"{100 * p['validation_accuracy']:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _curves_section(results: dict, methods: list[str], classifiers: list[str], fig_dir: Path) -> list[str]:
    """The training curves: every classifier run's (runs' "history") and every generator's (results["generators"])."""
    parts = []
    if any(r.get("history") for r in results["runs"]):
        figures.classifier_training_figure(results["runs"], methods, classifiers, fig_dir / "training_classifiers.png")
        parts += ["Classifiers: per epoch, the mean training loss (solid) and the validation accuracy (dashed, when "
                  "there is a validation split) of every seed, one panel per method and classifier; head "
                  "re-training epochs follow the training epochs.",
                  "![classifier training](figures/training_classifiers.png)"]
    if results.get("generators"):
        figures.generator_training_figure(results["generators"], fig_dir / "training_generators.png")
        parts += ["Generators trained by this run: the training loss (mean over the steps since the previous point).",
                  "![generator training](figures/training_generators.png)"]
    return ["## Training curves", *parts] if parts else []


def _feature_fill_section(runs: list[dict], methods: list[str], class_names: list[str]) -> list[str]:
    """Methods whose head re-training drew synthetic features (LDMLR): how many per class, the feature model's loss
    and what it cost (mean over the runs of each method)."""
    rows = []
    for m in methods:
        fills = [r["feature_fill"] for r in runs if r["method"] == m and r.get("feature_fill")]
        if not fills:
            continue
        f = fills[0]
        mean = lambda key: sum(x[key] or 0 for x in fills) / len(fills)  # noqa: E731
        seconds = mean("extract_seconds") + mean("train_seconds") + mean("sample_seconds")
        rows.append([m, f["views"], " ".join(map(str, f["real_per_class"])), " ".join(map(str, f["synthetic_per_class"])),
                     f"{mean('feature_model_loss_start'):.3f} → {mean('feature_model_loss_end'):.3f}",
                     f["feature_model_steps"], f"{seconds:.1f}", len(fills)])
    if not rows:
        return []
    return ["## Feature fills (head re-training on real + synthetic features)",
            "A small class-conditional diffusion model on the penultimate features of the real training images (after "
            "stage 1, `views` augmented views each) adds synthetic features of the rarer classes to the class-balanced "
            "head re-training (LDMLR). Per class, in class order: " + ", ".join(class_names) + ".",
            tables.markdown_table(["method", "views", "real images per class", "synthetic features per class",
                                   "feature-model loss (first → last 10 %)", "steps", "seconds per run", "runs"],
                                  rows)]


def _filter_section(tables_by_method: dict, filtered: Mapping[str, tuple[ImageSet, ImageSet]], config: dict,
                    fig_dir: Path) -> list[str]:
    """Per filtered method: per class candidates, kept, the judge's in-class rate and scores; kept vs rejected grids."""
    parts = ["## Over-generation and filtering",
             "Each filtered method made `factor` × the needed images; a judge classifier trained on the imbalanced "
             "real training set scored them (confidence in the intended class × closeness to its real images) and "
             "the best were kept. *In class*: share the judge assigns to the intended class."]
    for name, per_class in tables_by_method.items():
        rows = [[c, v["candidates"], v["kept"], f"{100 * v['in_class_all']:.1f}", f"{100 * v['in_class_kept']:.1f}",
                 f"{v['score_kept']:.3f}", f"{v['score_rejected']:.3f}"] for c, v in (per_class or {}).items()]
        parts += [f"### {name}", tables.markdown_table(
            ["class", "candidates", "kept", "in class, all %", "in class, kept %", "score kept", "score rejected"],
            rows)]
        if name in filtered:
            for part, images in zip(("kept", "rejected"), filtered[name]):
                if len(images):
                    figures.fill_grid(images, config.get("grid_images_per_class", 8), f"{name}: {part}",
                                      fig_dir / f"filter_{name}_{part}.png")
                    parts.append(f"![{name} {part}](figures/filter_{name}_{part}.png)")
    return parts


def _verdict_section(results: dict, methods: list[str], classifiers: list[str]) -> list[str]:
    """What choices are made on (held-out split or folds), each row's score there, and the paired verdict."""
    ds, runs = results["dataset"], results["runs"]
    selection = results.get("selection") or {}
    if "validation_counts" not in ds and not selection:
        return ["No validation section in this config (`validation:`), so no method is chosen and no verdict is given."]
    verdicts = results.get("verdict") or {}
    how = next((v.get("chosen_on") for v in verdicts.values() if v and v.get("chosen_on")), None)
    parts = ["## What choices were made on"]
    if how:
        parts.append(f"Every choice is made on {how}, never on the test set.")
    if "validation_counts" in ds:
        val_runs = [{**r, "val_accuracy": r["validation"]["accuracy"]} for r in runs if r.get("validation")]
        parts += [f"Real images held out of the imbalanced training set before anything was fitted: "
                  f"{ds['validation_counts']} per class.", "### Validation accuracy (%)",
                  tables.metric_table(val_runs, methods, classifiers, "val_accuracy")]
    for clf, rows in selection.items():
        table = [[m, f"{100 * r['score']:.2f}" if r.get("score") is not None else "–",
                  f"{100 * r['score_se']:.2f}" if r.get("score_se") is not None else "–", str(r.get("n", "")),
                  "yes" if r["generative"] else "no", r["from"] + (" — **fell back to copies**" if r["fell_back"] else "")]
                 for m, r in rows.items()]
        name = next(iter(rows.values()), {}).get("score_name", "score").replace("_", " ")
        parts += [f"### Each method's {name} on the folds (%) — {clf}",
                  tables.markdown_table(["method", "mean", "SE", "splits", "generative", "scored by"], table)]
    parts.append("## Did the generated images help?")
    for clf in classifiers:
        v = verdicts.get(clf) if clf in verdicts else paired_verdict(runs, clf)
        parts.append(verdict_text(v, results.get("ledger")) if v
                     else f"{clf}: no generative or no non-generative method to compare.")
    return parts


def _comparison_section(comparisons: dict) -> list[str]:
    """Every method against each `compare_with` baseline: test accuracy difference paired by seed."""
    parts = []
    for clf, by_baseline in comparisons.items():
        for baseline, by_method in by_baseline.items():
            rows = [[m, _points(c), interval_cell(c) or "–", _fmt(c["p_value"], 3),
                     f"{completed(c)['seeds_better']}/{len(c['seeds'])}"] for m, c in by_method.items()]
            parts += [f"## Against `{baseline}` — {clf}",
                      f"Test accuracy of each method minus `{baseline}`'s, paired by seed (points, mean ± std); the "
                      "95 % paired t interval and its verdict (better / worse: above / below 0, else inconclusive); "
                      f"one-sided paired t-test p (H1: better than `{baseline}`); **bold**: every seed better and "
                      "p < 0.05.",
                      tables.markdown_table(["method", "difference (points)", "95 % interval (points)", "p",
                                             "seeds better"], rows)]
    return parts


def _points(c: dict) -> str:
    if c["mean_difference"] is None:
        return "–"
    std = "" if c["std_difference"] is None else f" ± {100 * c['std_difference']:.2f}"
    text = f"{100 * c['mean_difference']:+.2f}{std}"
    return f"**{text}**" if c["beats"] else text


def _provenance(results: dict, config: dict) -> str:
    ds = renamed(results["dataset"], ("fill_counts",), "results.json dataset")
    to_add = ds["images_to_add"]
    v = results["versions"]
    command = " ".join(shlex.quote(a) for a in ["diffbalance", *sys.argv[1:]]) if sys.argv else "library call"
    lines = [
        f"- **Dataset**: {ds['name']} ({'×'.join(map(str, ds['image_shape']))}), profile `{ds['profile']}`, "
        f"training counts per class {ds['train_counts']} ({sum(ds['train_counts'])} images), "
        f"fill images per class {to_add} ({sum(to_add)} images), test {ds['test_count']} images.",
        f"- **Device**: {results['device']}" + (f" × {results['processes']} processes ({results.get('parallel')})"
                                                 if results.get("processes", 1) > 1 else "") +
        f"; classifier seeds {list(config['seeds'])}; "
        f"fill seed {config['fill_seed']}.",
        f"- **Command**: `{command}`; full config in `config.resolved.json`, every number in `results.json`.",
        "- **Versions**: " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]
    return "\n".join(lines)


def _knob(point: dict, name: str, default: float | None = None) -> str:
    value = point.get(name, default)
    return "–" if value is None else f"{value:g}"


def _quality_section(quality: dict) -> list[str]:
    first = next(iter(quality.values()))
    label = first.get("score", "FID")
    rows, hidden = [], []
    for m, q in quality.items():
        p, g = q["protocol_fid"], q["generated_fid"]
        pr, kid = q["precision_recall"], q["kid"]
        rows.append([m, f"{p['fid']:.3f}", f"{p['n_a']} vs {p['n_b']}"])
        hidden.append([m, f"{g['fid']:.3f}", f"{g['n_a']} vs {g['n_b']}",
                       _fmt(pr.get("precision")), _fmt(pr.get("recall")),
                       f"{_fmt(kid.get('kid_mean'), 4)} ± {_fmt(kid.get('kid_std'), 4)}"])
    per_class = [[m] + [_fmt(v["fid"]) for v in q["per_class_fid"].values()] for m, q in quality.items()]
    meta = (f"Features: {first['features']}; resize {first['resize']}; "
            f"weights sha256 {str(first['weights_sha256'])[:16]}…; "
            f"features {first['feature_dtype']}, statistics {first['statistics_dtype']}; device {first['device']}.")
    return [f"## Generation quality — {label}",
            "The paper's Table 2: the rebalanced set (imbalanced real + fill images) against the original balanced "
            "training images. " + meta,
            tables.markdown_table(["method", label, "images"], rows),
            "### What it hides: the fill images alone",
            f"{label} of the fill images alone against the real images of the classes they fill, improved precision / "
            "recall (k = 3) and KID. A rebalanced set is mostly real images, so its FID stays low even when the fills "
            "are poor.",
            tables.markdown_table(["method", f"{label} (fills only)", "images", "precision", "recall", "KID"], hidden),
            f"### Per-class {label} (fills of a class vs real images of that class)",
            tables.markdown_table(["method"] + list(first["per_class_fid"].keys()), per_class)]


def _fmt(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _choices_section(config: dict, train_defaults: Mapping[str, Any] | None) -> str:
    recipe = config["train"] if train_defaults is None else changed(config["train"], train_defaults)
    lines = ["## Choices where the paper is silent",
             f"- Which images are kept: `{config['imbalance']['selection']}` "
             "(first n in original order is the CIFAR-10-LT convention).",
             "- Mixup/CutMix fill: each fill image mixes two real images *of the class being filled* (torchvision v2 "
             "MixUp/CutMix, per-image seed), so its label is that class exactly.",
             _draws_line(config),
             "- Classifier recipe: " + (", ".join(f"{k}={v}" for k, v in recipe.items()) or "the defaults")]
    for c in config["classifiers"]:
        if not isinstance(c, str):
            lines.append(f"- Classifier `{c['name']}`: model `{c['model']}`, recipe overrides {c.get('train') or {}}")
    for m in config["methods"]:
        overrides = changed(m.get("train") or {}, config["train"])
        if m.get("params") or overrides:
            lines.append(f"- `{m['name']}`: rebalancer `{m['rebalancer']}` with {m.get('params') or {}}; "
                         f"recipe overrides {overrides}")
    return "\n".join(lines)


def _draws_line(config: dict) -> str:
    if config.get("fill_draws", "shared") == "shared" or len(config.get("seeds", ())) < 2:
        return "- Fill images are made once per method (fill seed) and shared by all classifier seeds."
    generators = " from a generator of its own" if config.get("generator_seeds") else ""
    return (f"- Every classifier seed after the first trains on its own fill draw{generators} (per-image seeds "
            "derived from it); the first uses the fill seed's.")


def changed(recipe: Mapping[str, Any], base: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The entries of `recipe` that differ from `base`, nested mappings flattened to dotted keys
    ({"lr": 0.05, "aug": {"flip": False}} vs {"lr": 0.1, "aug": {"flip": True}} → {"lr": 0.05, "aug.flip": False})."""
    out: dict[str, Any] = {}
    for key, value in recipe.items():
        old = base.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out.update(changed(value, old, f"{prefix}{key}."))
        elif key not in base or value != old:
            out[f"{prefix}{key}"] = value
    return out


def _stage_section(results: dict) -> str:
    """Wall time of each stage of the run (summed over the invocations that built this folder)."""
    invoked = invocations(results)
    seconds = stage_totals(invoked)
    if not seconds:
        return ""
    rows = [[stage, f"{s:.1f}", f"{s / 60:.1f}"] for stage, s in seconds.items()]
    rows.append(["total", f"{sum(seconds.values()):.1f}", f"{sum(seconds.values()) / 60:.1f}"])
    return (f"## Wall time per stage\n\nMeasured by the run on {where_ran(invoked)}, over {len(invoked)} invocation(s) "
            "(a resumed run adds each invocation's time).\n\n"
            + tables.markdown_table(["stage", "seconds", "minutes"], rows))


def _runs_section(runs: list[dict]) -> str:
    rows = [[r["method"], r["classifier"], r["seed"], f"{100 * r['accuracy']:.2f}",
             f"{100 * r['balanced_accuracy']:.2f}",
             f"{100 * r['macro_f1']:.2f}", r["train_images"], f"{r['train_seconds']:.0f}", r["device"]] for r in runs]
    return "## Every run\n\n" + tables.markdown_table(
        ["method", "classifier", "seed", "acc %", "bal. acc %", "macro-F1 %", "train images", "train s", "device"],
        rows)
