"""summary.md of a study (a config with `profiles:`): the profiles side by side, from each one's results.json.

    test accuracy   rows = methods, columns = profiles (mean ± std over seeds), one table per classifier
    verdicts        per profile: best generative vs best non-generative, both chosen on validation, paired by seed
    comparisons     per `compare_with` baseline: every method's paired difference and p per profile
    choices         what each profile's sweeps chose (on validation)
    few-shot        per-class F1 of the few-shot classes (≤ 1/3 of the largest class), where generation should
                    matter most
    wall time       per profile, summed over its stages and invocations, on the device(s) those ran on
Like the report, it takes plain data and imports nothing from the stages that make it.
"""

from __future__ import annotations

from pathlib import Path

from diffbalance.infra.atomic import write_text
from diffbalance.report import tables
from diffbalance.report.replication import replication_section
from diffbalance.report.timing import invocations, stage_totals, where_ran
from diffbalance.report.verdict import interval_cell, verdict_text

FEW_SHOT = 1 / 3  # a class is few-shot when it has at most this share of the largest class's training images


def write_study_summary(out_dir: Path, profiles: list[tuple[str, dict, dict]]) -> Path:
    """Write `out_dir/summary.md` for [(profile name, results, resolved config as a dict)]."""
    first_config = profiles[0][2]
    classifiers = tables.classifier_labels(first_config)
    parts = [f"# diffbalance study — {first_config['name'].split(' — ')[0]}",
             "One experiment per profile (each has its own `report.md` and `results.json` in its folder); every "
             "choice is made on the training data (validation folds or a held-out split), every difference is paired "
             "by classifier seed."]
    for clf in classifiers:
        parts += [f"## Test accuracy (%) — {clf}", _accuracy_table(profiles, clf)]
        parts += [f"## Verdicts — {clf}"] + [f"- **{name}**: " + _verdict(results, clf) for name, results, _ in profiles]
        parts += _comparisons(profiles, clf)
        parts += _few_shot(profiles, clf)
    for name, results, _ in profiles:
        rep = replication_section(results.get("replication"))
        if rep:
            parts += [f"## Does the verdict replicate? — {name}"] + rep[1:]
    parts += _choices(profiles) + [_wall_time(profiles)]
    path = Path(out_dir) / "summary.md"
    write_text(path, "\n\n".join(p for p in parts if p) + "\n")
    return path


def _methods(profiles: list[tuple[str, dict, dict]]) -> list[str]:
    """Every method of the profiles once, in run order (a method has one run per classifier and seed)."""
    return list(dict.fromkeys(r["method"] for _, results, _ in profiles for r in results["runs"]))


def _accuracy_table(profiles: list[tuple[str, dict, dict]], clf: str) -> str:
    rows = []
    for m in _methods(profiles):
        row = [m]
        for _, results, _ in profiles:
            row.append(tables.mean_std([r["accuracy"] for r in results["runs"]
                                        if r["method"] == m and r["classifier"] == clf], 100.0))
        rows.append(row)
    return tables.markdown_table(["method"] + [name for name, _, _ in profiles], rows)


def _verdict(results: dict, clf: str) -> str:
    v = (results.get("verdict") or {}).get(clf)
    return verdict_text(v, results.get("ledger")) if v else "no verdict (no validation split, or no method of one kind)"


def _comparisons(profiles: list[tuple[str, dict, dict]], clf: str) -> list[str]:
    baselines = {b for _, results, _ in profiles for b in (results.get("comparisons") or {}).get(clf, {})}
    parts = []
    for baseline in sorted(baselines):
        rows = []
        for m in _methods(profiles):
            if m == baseline:
                continue
            row = [m]
            for _, results, _ in profiles:
                c = (results.get("comparisons") or {}).get(clf, {}).get(baseline, {}).get(m)
                row.append(_difference(c))
            rows.append(row)
        parts += [f"### Against `{baseline}` — {clf}",
                  "Test accuracy difference in points (mean ± std over seeds, paired), its 95 % paired t interval "
                  "and verdict (better / worse: above / below 0, else inconclusive), one-sided paired t-test p; "
                  "**bold**: every seed better and p < 0.05.",
                  tables.markdown_table(["method"] + [name for name, _, _ in profiles], rows)]
    return parts


def _difference(c: dict | None) -> str:
    if not c or c["mean_difference"] is None:
        return "–"
    text = f"{100 * c['mean_difference']:+.2f}"
    if c["std_difference"] is not None:
        text += f" ± {100 * c['std_difference']:.2f}"
    if interval_cell(c):
        text += " " + interval_cell(c)
    if c["p_value"] is not None:
        text += f" (p = {c['p_value']:.3g})"
    return f"**{text}**" if c["beats"] else text


def _few_shot(profiles: list[tuple[str, dict, dict]], clf: str) -> list[str]:
    parts = [f"## Few-shot classes: per-class test F1 — {clf}",
             f"Classes with at most {FEW_SHOT:.2g} of the largest class's training images (count in brackets); "
             "mean ± std over seeds."]
    methods = _methods(profiles)
    for name, results, _ in profiles:
        counts, names = results["dataset"]["train_counts"], results["dataset"]["class_names"]
        few = [c for c, n in enumerate(counts) if n <= FEW_SHOT * max(counts)]
        rows = []
        for c in few:
            row = [f"{names[c]} ({counts[c]})"]
            for m in methods:
                row.append(tables.mean_std([r["per_class_f1"][c] for r in results["runs"]
                                            if r["method"] == m and r["classifier"] == clf], 1.0, 3))
            rows.append(row)
        parts += [f"### {name}", tables.markdown_table(["class (train images)"] + methods, rows)]
    return parts


def _choices(profiles: list[tuple[str, dict, dict]]) -> list[str]:
    rows = []
    for name, results, _ in profiles:
        for s in (results.get("sweep") or {}).get("sweeps", []):
            point = s["points"].get(s["chosen_point"], {})
            value = point.get("score", point.get("validation_accuracy"))
            spread = point.get("score_se", point.get("validation_accuracy_std"))
            score = "–" if value is None else f"{100 * value:.2f}" + (f" ± {100 * spread:.2f}" if spread else "")
            over = s.get("margin_over_zero") or s.get("best_over_zero")
            margin = "–" if not over or over.get("margin_se") is None else (
                f"{'' if s.get('margin_over_zero') else 'best ' + str(s.get('best_point')) + ': '}"
                f"{100 * over['mean']:+.2f} pts, {over['margin_se']:+.2f} SE")
            rows.append([name, s["method"] + (f" (+ {', '.join(s['also'])})" if s["also"] else ""),
                         s["chosen_point"] or "–", score, margin, str(len(s["points"]))])
    if not rows:
        return []
    return ["## What the sweeps chose (on the training data)",
            "Score: the chosen point's mean over folds × quick seeds ± its SE (older runs: validation accuracy ± "
            "std). Over the copies: the chosen point's paired advantage over the zero point, or the best point's when "
            "the copies were kept.",
            tables.markdown_table(["profile", "method", "chosen point", "score % (quick)", "over the copies",
                                   "points tried"], rows)]


def _wall_time(profiles: list[tuple[str, dict, dict]]) -> str:
    rows = []
    total = 0.0
    for name, results, _ in profiles:  # each profile's device(s) from its own invocations, not the last one's
        invoked = invocations(results)
        seconds = stage_totals(invoked)
        total += sum(seconds.values())
        rows.append([name, where_ran(invoked), f"{sum(seconds.values()) / 60:.1f}",
                     ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items())])
    return ("## Wall time\n\n" + tables.markdown_table(["profile", "device", "minutes", "per stage (minutes)"], rows)
            + f"\n\nTotal: {total / 60:.1f} minutes.")
