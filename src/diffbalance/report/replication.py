"""The replication table of a report: each verdict on the run's own draw and on every fresh draw
(experiment.replicate), and whether it held."""

from __future__ import annotations

from diffbalance.report import tables


def _pts(x: float | None, sign: bool = True) -> str:
    return "–" if x is None else f"{100 * x:{'+' if sign else ''}.2f}"


def _interval(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{_pts(ci[0])}, {_pts(ci[1])}]"


def replication_section(replication: dict | None) -> list[str]:
    """'## Does the verdict replicate?' with one table per classifier; [] without a replication."""
    if not replication or not replication.get("verdicts"):
        return []
    draws = replication.get("draws", {})
    parts = ["## Does the verdict replicate?",
             f"The chosen recipes frozen (no sweep, no selection), the verdict's two methods trained again on "
             f"{draws.get('draws', '?')} fresh random draws of the same profile (other images; the class order rotated "
             f"{'on' if draws.get('rotate', True) else 'off'}), with new classifier and fill seeds. A draw replicates "
             "the verdict when its paired 95 % interval gives the same word."]
    for clf, v in replication["verdicts"].items():
        rows = [["the run's own draw", _pts(v["mean_difference"]), _interval(v["ci95"]), str(v["verdict"]), "–", "–"]]
        for k, r in enumerate(v["draws"]):
            rows.append([f"draw {k} (seed {r['imbalance_seed']}, rarest {r['order'][0] if r['order'] else '–'})",
                         _pts(r["mean_difference"]) + (f" ± {_pts(r['std_difference'], False)}"
                                                       if r["std_difference"] is not None else ""),
                         _interval(r["ci95"]), str(r["verdict"]), f"{r['seeds_better']}/{len(r['differences'])}",
                         "yes" if r["replicated"] else "**no**"])
        parts += [f"### `{v['generative']}` − `{v['non_generative']}` ({clf}): replicated on {v['replicated']} of "
                  f"{v['of']} draws",
                  tables.markdown_table(["draw", "difference (points)", "95 % interval", "verdict", "seeds better",
                                         "replicated"], rows)]
    return parts
