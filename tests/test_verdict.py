"""The paired verdict: a 95 % t interval of per-seed differences, three verdicts, the every-seed rule, the MDE."""

import math
import statistics

import pytest
from scipy import stats

from diffbalance.report.verdict import interval, paired_difference, paired_verdict, verdict_text


def runs_for(diffs, base=0.5):
    """Runs of a generative `cfg` and a non-generative `over`, whose per-seed test differences are `diffs`."""
    runs = []
    for s, d in enumerate(diffs):
        runs += [{"method": "cfg", "classifier": "c", "seed": s, "accuracy": base + d, "generative": True,
                  "validation": {"accuracy": 0.7}},
                 {"method": "over", "classifier": "c", "seed": s, "accuracy": base, "generative": False,
                  "validation": {"accuracy": 0.6}}]
    return runs


def test_interval_matches_scipy():
    diffs = [0.021, 0.030, 0.017, 0.026, 0.012]
    got = paired_difference(runs_for(diffs), "c", "cfg", "over")
    want = stats.t.interval(0.95, len(diffs) - 1, loc=statistics.fmean(diffs), scale=stats.sem(diffs))
    assert got["ci95"] == pytest.approx(list(want), abs=1e-12)
    assert got["se"] == pytest.approx(stats.sem(diffs), abs=1e-12)
    assert got["differences"] == pytest.approx(diffs, abs=1e-12) and got["seeds_better"] == 5


@pytest.mark.parametrize("points, verdict", [([2, 3, 2.5], "better"), ([-2, -3, -2.5], "worse"),
                                             ([3, -2, 1], "inconclusive")])
def test_three_verdicts(points, verdict):
    v = paired_verdict(runs_for([p / 100 for p in points]), "c")
    assert v["verdict"] == verdict
    assert (v["generative"], v["non_generative"]) == ("cfg", "over")


def test_every_seed_rule_is_stricter_than_p():
    c = paired_difference(runs_for([0.05] * 8 + [-0.001]), "c", "cfg", "over")
    assert c["p_value"] < 0.05  # the t-test alone would say "beats"
    assert c["beats"] is False and c["seeds_better"] == 8
    assert paired_difference(runs_for([0.05, 0.04, 0.06]), "c", "cfg", "over")["beats"] is True


@pytest.mark.parametrize("d, verdict", [(0.25, "better"), (-0.25, "worse"), (0.0, "inconclusive")])
def test_identical_differences(d, verdict):
    got = interval([d, d, d])
    assert got["ci95"] == [d, d] and got["verdict"] == verdict and got["se"] == 0 and got["mde"] == 0


def test_one_seed_has_no_verdict():
    v = paired_verdict(runs_for([0.03]), "c")
    assert v["verdict"] is None and v["ci95"] is None and v["mde"] is None and v["beats"] is None
    text = verdict_text(v)
    assert "One seed: no interval" in text and "**" not in text


def test_mde_shrinks_with_seeds_and_grows_with_std():
    few, many = interval([0.01, 0.03] * 2), interval([0.01, 0.03] * 8)
    assert many["mde"] < few["mde"]
    assert interval([0.0, 0.04] * 2)["mde"] > few["mde"]
    n, std = 4, statistics.stdev([0.01, 0.03] * 2)
    assert few["mde"] == pytest.approx((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * std / math.sqrt(n))


@pytest.mark.parametrize("points", [[2, 3, 2.5], [-2, -3, -2.5], [3, -2, 1], [1]])
def test_text_has_a_verdict_word_never_no(points):
    v = paired_verdict(runs_for([p / 100 for p in points]), "c")
    text = verdict_text(v, {"test_set": "abc123", "configs_scored": 4})
    assert "**no**" not in text and "**yes**" not in text
    assert "scored by 4 differing configs (diffbalance's ledger)" in text
    if len(points) > 1:
        assert f"**{v['verdict']}**" in text
        low, high = v["ci95"]
        assert f"[{100 * low:+.2f}, {100 * high:+.2f}] points" in text
        assert "one fill draw and one generator: their variance is not in the interval" in text
    assert "ledger" not in verdict_text(v)


def test_text_says_what_the_interval_covers_and_how_methods_were_chosen():
    runs = runs_for([0.02, 0.03, 0.025])
    v = paired_verdict(runs, "c", "cfg", "over", chosen_on="5-fold cross-validation accuracy",
                       variance_covers=("classifier seeds", "fill draws"))
    text = verdict_text(v)
    assert v["chosen_on"] == "5-fold cross-validation accuracy" and v["variance_covers"] == ["classifier seeds",
                                                                                             "fill draws"]
    assert "chosen on 5-fold cross-validation accuracy" in text
    assert "covers classifier seeds, fill draws; one generator: its variance is not in the interval" in text
    full = verdict_text({**v, "variance_covers": ["classifier seeds", "fill draws", "generators"]})
    assert "not in the interval" not in full


def test_older_results_still_read():
    v = paired_verdict(runs_for([0.02, 0.03, 0.025]), "c")
    old = {k: v[k] for k in ("classifier", "generative", "non_generative", "seeds", "differences",
                             "mean_difference", "std_difference", "p_value", "beats")}
    assert verdict_text(old) == verdict_text(v)  # the interval is recomputed from the differences
    assert "older result" in verdict_text({k: old[k] for k in ("classifier", "generative", "non_generative")}
                                          | {"mean_difference": None, "std_difference": None, "p_value": None,
                                             "beats": None})


def test_reports_print_the_verdict_interval_and_ledger():
    from diffbalance.report import study, write

    runs = runs_for([0.02, 0.03, 0.025])
    ledger = {"test_set": "abc123", "configs_scored": 3}
    results = {"dataset": {"validation_counts": [2, 2]}, "runs": runs, "ledger": ledger,
               "verdict": {"c": paired_verdict(runs, "c")},
               "comparisons": {"c": {"over": {"cfg": paired_difference(runs, "c", "cfg", "over")}}}}
    section = "\n".join(write._verdict_section(results, ["cfg", "over"], ["c"]))
    assert "**better**" in section and "scored by 3 differing configs" in section
    assert "scored by 3 differing configs" in study._verdict(results, "c")
    c = results["comparisons"]["c"]["over"]["cfg"]
    low, high = (f"{100 * x:+.1f}" for x in c["ci95"])
    assert study._difference(c).startswith(f"**+2.50 ± 0.50 [{low}, {high}] better")  # bold: every seed, p < 0.05
    old = {k: c[k] for k in ("seeds", "differences", "mean_difference", "std_difference", "p_value", "beats")}
    table = "\n".join(write._comparison_section({"c": {"over": {"cfg": old}}}))
    assert f"| cfg | **+2.50 ± 0.50** | [{low}, {high}] better |" in table and "| yes |" not in table
