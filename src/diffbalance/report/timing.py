"""Wall time of a run folder, from the record of each invocation that built it (results.json's `invocations`:
device and threads, processes, seconds per stage), so a run resumed on another machine or at another thread
count says where its time went, and an invocation stopped before its first classifier still counts.
"""

from __future__ import annotations


def invocations(results: dict) -> list[dict]:
    """Each invocation's {device, processes, stage_seconds}; a results.json written before invocations were recorded
    gives its stage totals as one, on the device it names."""
    if results.get("invocations"):
        return results["invocations"]
    seconds = results.get("stage_seconds") or {}
    return [{"device": results.get("device", "–"), "processes": results.get("processes", 1),
             "stage_seconds": seconds}] if seconds else []


def stage_totals(invoked: list[dict]) -> dict[str, float]:
    """Seconds per stage summed over the invocations, stages in the order they first ran."""
    out: dict[str, float] = {}
    for inv in invoked:
        for stage, seconds in inv["stage_seconds"].items():
            out[stage] = out.get(stage, 0.0) + seconds
    return {stage: round(seconds, 2) for stage, seconds in out.items()}


def where_ran(invoked: list[dict]) -> str:
    """Where the time was spent: the one device ("cpu (16 threads)"), or each with its minutes when the
    invocations differ ("cpu (16 threads) 41.2 min, cpu (2 threads) 3.0 min")."""
    minutes: dict[str, float] = {}
    for inv in invoked:
        processes = inv.get("processes", 1)
        label = inv["device"] + (f" × {processes} processes" if processes > 1 else "")
        minutes[label] = minutes.get(label, 0.0) + sum(inv["stage_seconds"].values()) / 60
    if len(minutes) <= 1:
        return next(iter(minutes), "–")
    return ", ".join(f"{label} {m:.1f} min" for label, m in minutes.items())
