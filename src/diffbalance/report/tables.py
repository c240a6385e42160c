"""Markdown tables from results.json: the paper's layouts (Table 2 FID, Table 3 accuracy, Table 4 per-class F1),
mean ± std over seeds."""

from __future__ import annotations

import statistics
from collections import defaultdict


def classifier_labels(config: dict) -> list[str]:
    """The classifiers' labels of a saved config: a name, or a {name, model, train} entry's name."""
    return [c if isinstance(c, str) else c.get("name") or c["model"] for c in config["classifiers"]]


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def grouped(runs: list[dict], key: str) -> dict[tuple[str, str], list]:
    out = defaultdict(list)
    for r in runs:
        out[(r["method"], r["classifier"])].append(r[key])
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metric_table(runs: list[dict], methods: list[str], classifiers: list[str], key: str, scale=100.0, digits=2) -> str:
    """Rows = classifier, columns = method (the paper's Table 3 layout)."""
    g = grouped(runs, key)
    rows = [[clf] + [mean_std(g.get((m, clf), []), scale, digits) for m in methods] for clf in classifiers]
    return markdown_table(["classifier"] + methods, rows)


def per_class_f1_table(runs: list[dict], methods: list[str], classifier: str, class_names: list[str],
                       counts: list[int]) -> str:
    """Rows = class (with its training count), columns = method (the paper's Table 4 layout), for one classifier."""
    g = grouped(runs, "per_class_f1")
    rows = []
    for c, name in enumerate(class_names):
        row = [f"{c} {name} ({counts[c]})"]
        for m in methods:
            row.append(mean_std([f1[c] for f1 in g.get((m, classifier), [])], 1.0, 3))
        rows.append(row)
    return markdown_table(["class (train images)"] + methods, rows)


def shot_table(runs: list[dict], methods: list[str], classifier: str) -> str:
    rows = []
    for m in methods:
        rs = [r for r in runs if r["method"] == m and r["classifier"] == classifier]
        row = [m]
        for group in ("many", "medium", "few"):
            vals = [r["metrics"].get(f"{group}_shot_accuracy") for r in rs]
            row.append(mean_std([v for v in vals if v is not None], 100.0))
        rows.append(row)
    return markdown_table(["method", "many-shot acc %", "medium-shot acc %", "few-shot acc %"], rows)


def consistency_table(consistency: dict, class_names: list[str]) -> str:
    """Rows = class, columns = the reference classifier on real test images (the ceiling), then each method."""
    names = [k for k in consistency if k != "reference"]
    ref = consistency["reference"]["test"]
    rows = []
    for cname in class_names:
        row = [cname, _pct(ref["per_class"].get(cname, {}).get("agreement_pct"))]
        row += [_pct(consistency[n]["per_class"].get(cname, {}).get("agreement_pct")) for n in names]
        rows.append(row)
    rows.append(["**all**", _pct(ref["agreement_pct"])] + [_pct(consistency[n]["agreement_pct"]) for n in names])
    return markdown_table(["class", "reference on real test"] + names, rows)


def _pct(v) -> str:
    return "–" if v is None else f"{v:.1f}"
