"""Did generated images help? The best generative and the best non-generative method — each chosen on held-out
data (mean validation accuracy, or cross-validation where the caller says so), never on test accuracy — compared on
test accuracy, paired by classifier seed.

Paired difference per seed: d_s = acc_method(s) − acc_baseline(s), n seeds, mean d̄, sample std s_d, se = s_d/√n.
    95 % interval   d̄ ± t_{0.975, n−1}·se                          (two-sided paired t interval)
    verdict         better: interval above 0; worse: below 0; inconclusive: it contains or touches 0
    MDE             (t_{0.975, n−1} + t_{0.8, n−1})·s_d/√n          (two-sided α 0.05, power 0.8, paired t)
    beats           every d_s > 0 and one-sided paired t-test p < 0.05 (scipy.stats.ttest_rel); the bold rule of
                    the comparison tables, stricter than "better"
With fewer than 2 shared seeds there is no interval and no verdict. All values in accuracy units (0–1).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from scipy import stats

ALPHA = 0.05  # significance level: one-sided for `beats`, two-sided for the interval and the MDE
POWER = 0.8  # power of the minimum detectable effect
VERDICTS = ("better", "worse", "inconclusive")
UNCOVERED = {"fill draws": "one fill draw", "generators": "one generator"}  # variance sources a run may hold fixed


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


def paired_verdict(runs: list[dict], classifier: str, generative: str | None = None,
                   non_generative: str | None = None, chosen_on: str = "mean validation accuracy",
                   variance_covers: tuple[str, ...] | list[str] = ("classifier seeds",)) -> dict | None:
    """The comparison of the module docstring. A method name left None is the best of its kind by validation
    accuracy; `chosen_on` says how the two were chosen and `variance_covers` which sources of variance the seeds
    vary (both for the text). None when either method is missing."""
    gen = generative if generative is not None else best_by_validation(runs, classifier, True)
    base = non_generative if non_generative is not None else best_by_validation(runs, classifier, False)
    if gen is None or base is None:
        return None
    return {"classifier": classifier, "generative": gen, "non_generative": base, "chosen_on": chosen_on,
            "variance_covers": list(variance_covers), **paired_difference(runs, classifier, gen, base)}


def interval(diffs: list[float]) -> dict:
    """se, the 95 % interval, the verdict, seeds better and the MDE of per-seed differences (module docstring);
    se, ci95, verdict and mde are None with fewer than 2 differences. Identical differences: interval [d, d]."""
    out = {"se": None, "ci95": None, "verdict": None, "seeds_better": sum(d > 0 for d in diffs), "mde": None}
    n = len(diffs)
    if n < 2:
        return out
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs)  # exactly 0 for identical differences
    se = std / math.sqrt(n)
    t_half = float(stats.t.ppf(1 - ALPHA / 2, n - 1))
    low, high = mean - t_half * se, mean + t_half * se
    verdict = "better" if low > 0 else "worse" if high < 0 else "inconclusive"
    mde = (t_half + float(stats.t.ppf(POWER, n - 1))) * se
    return {**out, "se": se, "ci95": [low, high], "verdict": verdict, "mde": mde}


def paired_difference(runs: list[dict], classifier: str, method: str, baseline: str) -> dict:
    """Test accuracy of `method` minus `baseline`, paired by seed: the differences, their mean and std, the
    one-sided paired t-test's p (H1: method > baseline), `beats` (every seed better and p < ALPHA), and the
    interval keys of `interval`; p and beats are None with fewer than 2 shared seeds."""
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
    return {**out, **interval(diffs)}


def comparisons(runs: list[dict], classifier: str, baselines: list[str], methods: list[str]) -> dict:
    """{baseline: {method: paired_difference}} for every other method (the config's `compare_with`)."""
    return {b: {m: paired_difference(runs, classifier, m, b) for m in methods if m != b} for b in baselines}


def completed(c: dict) -> dict:
    """`c` with the interval keys recomputed from its differences where missing (a results.json written before
    they existed)."""
    if "verdict" in c and "ci95" in c and "mde" in c:
        return c
    return {**c, **interval(list(c.get("differences") or []))}


def _pts(x: float, digits: int = 2, sign: bool = True) -> str:
    return f"{100 * x:{'+' if sign else ''}.{digits}f}"


def interval_cell(c: dict) -> str:
    """'[+1.4, +2.9] better' in points for a comparison table; '' without an interval."""
    c = completed(c)
    if c["ci95"] is None:
        return ""
    low, high = c["ci95"]
    return f"[{_pts(low, 1)}, {_pts(high, 1)}] {c['verdict']}"


def _uncovered(covers: list[str]) -> str:
    missing = [text for source, text in UNCOVERED.items() if source not in covers]
    if not missing:
        return ""
    its = "their variance is" if len(missing) > 1 else "its variance is"
    return f"; {' and '.join(missing)}: {its} not in the interval"


def verdict_text(v: dict, ledger: dict | None = None) -> str:
    """One paragraph for the report: the question, the verdict in bold, the differences and the interval in
    points, the MDE, what the interval covers, how the methods were chosen, and the test set's ledger count."""
    if v.get("fell_back") and v.get("generative") is None:
        text = (f"Is a generative method better or worse than the best non-generative one (`{v['non_generative']}`, "
                f"classifier {v['classifier']})? **Not tested**: on {v.get('chosen_on') or 'validation'}, no generated "
                f"fill beat plain copies by more than one standard error, so every generative row "
                f"({', '.join(f'`{m}`' for m in v['fell_back'])}) kept its zero point — copies of real images, "
                "oversampling itself — and added no generated image to judge.")
        return text + _ledger_text(ledger)
    v = completed(v)
    chosen_on = v.get("chosen_on") or "mean validation accuracy"
    covers = list(v.get("variance_covers") or ["classifier seeds"])
    question = (f"Is the best generative method (`{v['generative']}`) better or worse than the best non-generative "
                f"one (`{v['non_generative']}`) on test accuracy (classifier {v['classifier']})?")
    if v["verdict"] is None:
        why = "One seed" if "differences" in v else "An older result without per-seed differences"
        text = f"{question} {why}: no interval, so no verdict. Both were chosen on {chosen_on}."
    else:
        diffs = v["differences"]
        low, high = v["ci95"]
        text = (f"{question} **{v['verdict']}**. Paired by classifier seed (seeds {', '.join(map(str, v['seeds']))}): "
                f"difference {_pts(v['mean_difference'])} ± {_pts(v['std_difference'], sign=False)} points (mean ± "
                f"std), 95 % interval [{_pts(low)}, {_pts(high)}] points; per seed "
                f"{', '.join(_pts(d) for d in diffs)}; {v['seeds_better']} of {len(diffs)} seeds better. "
                f"This many seeds could detect a difference of about {_pts(v['mde'], sign=False)} points "
                f"(two-sided α {ALPHA}, power {POWER}). The interval covers {', '.join(covers)}{_uncovered(covers)}. "
                f"Both methods were chosen on {chosen_on}, never on test accuracy.")
    return text + _ledger_text(ledger)


def _ledger_text(ledger: dict | None) -> str:
    if not ledger:
        return ""
    k = ledger["configs_scored"]
    return (f" This test set has been scored by {k} differing config{'s' if k != 1 else ''} (diffbalance's "
            "ledger); every config scored on it is another look at the same test images.")
