"""Did generated images help? The best generative and the best non-generative method — each chosen by mean
*validation* accuracy, never by test accuracy — compared on test accuracy, paired by classifier seed.

Paired difference per seed: d_s = acc_gen(s) − acc_nongen(s). The generative method "beats" the other beyond the
seeds' spread when every d_s > 0 and a one-sided paired t-test on the d_s gives p < 0.05 (scipy.stats.ttest_rel).
With fewer than 2 shared seeds there is no verdict.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from scipy import stats

ALPHA = 0.05  # significance level of the one-sided paired t-test


def _by_method(runs: list[dict], classifier: str, key) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for r in runs:
        value = key(r)
        if r["classifier"] == classifier and value is not None:
            out[r["method"]][r["seed"]] = value
    return out


def best_by_validation(runs: list[dict], classifier: str, generative: bool) -> str | None:
    """The method with the highest mean validation accuracy among generative (or non-generative) methods."""
    val = _by_method([r for r in runs if bool(r.get("generative")) == generative and not r.get("ceiling")], classifier,
                     lambda r: (r.get("validation") or {}).get("accuracy"))
    if not val:
        return None
    return max(val, key=lambda m: statistics.fmean(val[m].values()))


def paired_verdict(runs: list[dict], classifier: str) -> dict | None:
    """The comparison described in the module docstring; None without validation results for both kinds."""
    gen, base = best_by_validation(runs, classifier, True), best_by_validation(runs, classifier, False)
    if gen is None or base is None:
        return None
    return {"classifier": classifier, "generative": gen, "non_generative": base,
            **paired_difference(runs, classifier, gen, base)}


def paired_difference(runs: list[dict], classifier: str, method: str, baseline: str) -> dict:
    """Test accuracy of `method` minus `baseline`, paired by seed: the differences, their mean and std, the
    one-sided paired t-test's p (H1: method > baseline) and whether the method beats the baseline (every seed
    better and p < ALPHA); p and beats are None with fewer than 2 shared seeds."""
    test = _by_method(runs, classifier, lambda r: r["accuracy"])
    seeds = sorted(set(test.get(method, {})) & set(test.get(baseline, {})))
    diffs = [test[method][s] - test[baseline][s] for s in seeds]
    out = {"seeds": seeds, "differences": diffs, "mean_difference": statistics.fmean(diffs) if diffs else None,
           "std_difference": statistics.stdev(diffs) if len(diffs) > 1 else None, "p_value": None, "beats": None}
    if len(diffs) >= 2:
        if statistics.pstdev(diffs) == 0:
            p = 0.0 if diffs[0] > 0 else 1.0
        else:
            p = float(stats.ttest_rel([test[method][s] for s in seeds], [test[baseline][s] for s in seeds],
                                      alternative="greater").pvalue)
        out["p_value"] = p
        out["beats"] = bool(all(d > 0 for d in diffs) and p < ALPHA)
    return out


def comparisons(runs: list[dict], classifier: str, baselines: list[str], methods: list[str]) -> dict:
    """{baseline: {method: paired_difference}} for every other method (the config's `compare_with`)."""
    return {b: {m: paired_difference(runs, classifier, m, b) for m in methods if m != b} for b in baselines}


def verdict_text(v: dict) -> str:
    """One paragraph for the report."""
    if v["beats"] is None:
        return (f"Best generative method (by validation accuracy): `{v['generative']}`; best non-generative: "
                f"`{v['non_generative']}`. Fewer than 2 shared seeds: no verdict.")
    d = f"{100 * v['mean_difference']:+.2f} ± {100 * v['std_difference']:.2f} points"
    answer = "**yes**" if v["beats"] else "**no**"
    return (f"Does the best generative method (`{v['generative']}`, chosen on validation accuracy) beat the best "
            f"non-generative one (`{v['non_generative']}`) on the test set beyond the seeds' spread? {answer}. "
            f"Paired by seed (seeds {', '.join(map(str, v['seeds']))}; {v['classifier']}): test accuracy difference {d}, "
            f"one-sided paired t-test p = {v['p_value']:.3g} (beats = every seed better and p < {ALPHA}).")
