"""Which methods the verdict compares: the best generative and the best non-generative row, chosen on training data.

With a held-out split every final run is scored on it (grid.train_and_evaluate), and a row's score is its mean over
the classifier seeds (a swept row's sweep says only whether it kept the copies). With cross-validation (`validation.folds`) the final runs train on every image, so each row is
scored like a sweep point: filled on every fold's training part, a quick classifier (`validation.train` on top of
the row's recipe) trained per fold × `validation.seeds`, scored on the held-out fold. A swept row's score is its
chosen point's; a row whose sweep kept the zero point (copies) is marked `fell_back`: it adds no generated image,
so it cannot stand for generation. The best of each kind is the highest mean score (ties: config order).
"""

from __future__ import annotations

import statistics

from diffbalance.classify.config import TrainConfig
from diffbalance.experiment.config import MethodConfig
from diffbalance.experiment.stage import Stage
from diffbalance.experiment.sweep import SCORE_DIGITS, SweepConfig, Sweeper, choice_recipe
from diffbalance.rebalance.registry import rebalancer_class


def row_scores(st: Stage, sweeper: Sweeper | None, methods: list[MethodConfig], sweep: dict | None,
               runs: list[dict], classifier: str) -> dict[str, dict]:
    """{method: {"score", "score_se", "generative", "fell_back", "from"}} for every row (ceiling excluded): with a
    held-out split from `runs` of `classifier`; cross-validated rows with the quick classifier (the first one)."""
    config = st.config
    swept = {s["method"]: s for s in (sweep or {}).get("sweeps", [])}
    out = {}
    for m in methods:
        generative = rebalancer_class(m.rebalancer).generative
        fell_back = m.name in swept and swept[m.name]["chosen_point"] == swept[m.name].get("zero_point")
        if not config.validation.cross_validated:  # every row from its final runs, alike
            out[m.name] = {**_held_out(runs, m.name, classifier, config.validation.score), "generative": generative,
                           "fell_back": fell_back, "from": "the final runs on the held-out split"}
        elif m.name in swept:
            s = swept[m.name]
            out[m.name] = {**_summary(s["points"][s["chosen_point"]]), "generative": generative,
                           "fell_back": fell_back, "from": f"sweep point {s['chosen_point']}"}
        else:
            v = config.validation
            quick = SweepConfig(method=m.name, seeds=v.seeds, train=dict(v.train),
                                max_images_per_class=v.max_images_per_class if generative else None)
            recipe = TrainConfig.from_dict({**choice_recipe(config, m.train).to_dict(), **v.train},
                                           path="validation.train")
            point = sweeper.measure(m, {}, "row", recipe, quick)
            out[m.name] = {**_summary(point), "generative": generative, "fell_back": False,
                           "from": "cross-validated quick classifiers"}
    return out


def _summary(point: dict) -> dict:
    return {"score": point.get("score", point.get("validation_accuracy")), "score_se": point.get("score_se"),
            "score_name": point.get("score_name", "accuracy"), "n": len(point.get("scores", point.get("seeds", [])))}


def _held_out(runs: list[dict], method: str, classifier: str, name: str) -> dict:
    """A row's score from its final runs' validation metrics (mean over the classifier's seeds)."""
    values = [r["validation"].get(name, r["validation"]["accuracy"]) for r in runs
              if r["method"] == method and r["classifier"] == classifier and r.get("validation")]
    return {"score": statistics.fmean(values) if values else None,
            "score_se": statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None,
            "score_name": name, "n": len(values)}


def best_rows(scores: dict[str, dict]) -> tuple[str | None, str | None]:
    """(best generative that did not fall back to copies, best non-generative), by mean score; ties: config order."""
    def best(rows):
        rows = [m for m in rows if scores[m]["score"] is not None]
        return max(rows, key=lambda m: round(scores[m]["score"], SCORE_DIGITS)) if rows else None

    return (best([m for m, r in scores.items() if r["generative"] and not r["fell_back"]]),
            best([m for m, r in scores.items() if not r["generative"]]))
