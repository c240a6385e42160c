"""Random oversampling: diffbalance's `oversample` rebalancer vs imbalanced-learn's RandomOverSampler on the same
uint8 image arrays, each in its own fresh process (peak RSS read inside it, `rss_gb`): seconds, new images/s,
peak memory, and the ratios.

    .venv/bin/python benchmarks/oversample.py                  # CIFAR-10 cut 500…5000 (linear): 27,500 → 50,000
    .venv/bin/python benchmarks/oversample.py --n-min 50       # 2,750 → 5,000, a few seconds

X is N×H×W×C uint8 (what imbalanced-learn users hold), y int64 labels; both are written once to .npy files that
every job reads before its clock starts. Each job: `fit_resample(X, y)` `--repeats` times (the previous result freed
first), best time; peak RSS over the whole job, and the same less the RSS before the first call (imports and the
arrays: the call's own memory). imbalanced-learn takes 2-D X: it gets X.reshape(N, -1) (a view) and its result is
reshaped back. The draws differ (their RNG is not ours), so agreement means: the inputs come first and unchanged,
the per-class counts match, and every new image is an exact copy of an input image of its class.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from peak_memory import rss_gb  # benchmarks/peak_memory.py (this script's folder is on sys.path)

# Only the standard library at the top: each job is a fresh spawned process that imports this file, and must pay
# for its own library's imports only (imbalanced-learn does not import torch).


def job_diffbalance(x_path: str, y_path: str, seed: int, repeats: int) -> dict:
    import numpy as np

    from diffbalance.rebalance.registry import build_rebalancer

    X, y = np.load(x_path), np.load(y_path)

    def resample():
        return build_rebalancer("oversample", random_state=seed).fit_resample(X, y)

    return measured(resample, X, y, repeats)


def job_imblearn(x_path: str, y_path: str, seed: int, repeats: int) -> dict:
    import numpy as np
    from imblearn.over_sampling import RandomOverSampler

    X, y = np.load(x_path), np.load(y_path)

    def resample():
        X_flat, y_res = RandomOverSampler(random_state=seed).fit_resample(X.reshape(len(X), -1), y)
        return X_flat.reshape(-1, *X.shape[1:]), y_res

    return measured(resample, X, y, repeats)


def measured(resample, X, y, repeats: int) -> dict:
    """Best time of `repeats` calls, the peak RSS, and what the last result is (checked after the clock)."""
    floor, seconds = rss_gb(), []
    for _ in range(repeats):
        X_res = y_res = None  # the previous result is freed first: the peak is that of one call
        start = time.perf_counter()
        X_res, y_res = resample()
        seconds.append(time.perf_counter() - start)
    peak = rss_gb()
    return {"seconds": min(seconds), "seconds_all": seconds, "peak_rss_gb": peak, "before_call_rss_gb": floor,
            "call_rss_gb": peak - floor, "n_in": len(X), "n_out": len(X_res), **agreement(X, y, X_res, y_res)}


def agreement(X, y, X_res, y_res) -> dict:
    """Inputs first and unchanged, counts per class, every new image a copy of an input image of its class."""
    import hashlib

    import numpy as np

    def digest(row) -> bytes:
        return hashlib.blake2b(row.tobytes(), digest_size=16).digest()

    X_res, y_res = np.asarray(X_res), np.asarray(y_res)
    n = len(X)
    own = {(c, digest(row)) for c, row in zip(y.tolist(), X)}
    copies = all((c, digest(row)) in own for c, row in zip(y_res[n:].tolist(), X_res[n:]))
    classes, counts = np.unique(y_res, return_counts=True)
    return {"inputs_first": bool(np.array_equal(X_res[:n], X) and np.array_equal(y_res[:n], y)),
            "counts": dict(zip(classes.tolist(), counts.tolist())), "new_are_copies_of_own_class": copies,
            "dtype": str(X_res.dtype), "shape": list(X_res.shape),
            "sha256": hashlib.sha256(X_res.tobytes() + y_res.tobytes()).hexdigest()}


def in_fresh_process(job, *args) -> dict:
    """job(*args) in a new spawned interpreter (not forked: no parent memory), so its peak RSS is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(job, args)


def write_arrays(folder: Path, dataset: str, n_min: int) -> tuple[str, str, list[int]]:
    """The training set cut to the linear profile (n_min, 2·n_min, …), as N×H×W×C uint8 and int64 .npy files."""
    import numpy as np

    from diffbalance.data.sources import DataConfig, load_train_test
    from diffbalance.imbalance.subset import ImbalanceConfig, apply_profile

    train, _ = load_train_test(DataConfig(name=dataset, download=False))
    cut = apply_profile(train, ImbalanceConfig(profile="linear", n_min=n_min))
    x_path, y_path = folder / "X.npy", folder / "y.npy"
    np.save(x_path, cut.images.permute(0, 2, 3, 1).contiguous().numpy())  # (N, H, W, C)
    np.save(y_path, cut.labels.numpy())
    return str(x_path), str(y_path), cut.counts()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", help="a data source found locally (no download)")
    p.add_argument("--n-min", type=int, default=500, help="linear profile: the smallest class keeps this many, "
                   "class k keeps (k + 1)·n_min (CIFAR-10, 500: 27,500 images, filled to 50,000)")
    p.add_argument("--repeats", type=int, default=3, help="calls per job; the best time counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="oversample-bench-") as tmp:
        x_path, y_path, counts = write_arrays(Path(tmp), args.dataset, args.n_min)
        rows.append(("diffbalance oversample", in_fresh_process(job_diffbalance, x_path, y_path, args.seed,
                                                                args.repeats)))
        if importlib.util.find_spec("imblearn") is None:
            print("imbalanced-learn not installed: pip install 'diffbalance[bench]'")
        else:
            from importlib.metadata import version

            rows.append((f"imbalanced-learn {version('imbalanced-learn')} RandomOverSampler",
                         in_fresh_process(job_imblearn, x_path, y_path, args.seed, args.repeats)))
    report(rows, counts, args)


def call_ratio(ours: dict, theirs: dict) -> str:
    """ours / theirs of the memory the calls added, when both added a measurable amount (≥ 10 MB)."""
    if min(ours["call_rss_gb"], theirs["call_rss_gb"]) < 0.01:
        return "n/a (< 10 MB) of"
    return f"{ours['call_rss_gb'] / theirs['call_rss_gb']:.2f}x"


def report(rows: list[tuple[str, dict]], counts: list[int], args: argparse.Namespace) -> None:
    first = rows[0][1]
    print(f"\n{args.dataset} linear n_min={args.n_min} ({'/'.join(map(str, counts))}): {first['n_in']:,} → "
          f"{first['n_out']:,} images {'×'.join(map(str, first['shape'][1:]))} uint8; best of {args.repeats}, "
          "each tool in a fresh process")
    print(f"{'tool':<46} {'seconds':>8} {'new img/s':>10} {'peak GB':>8} {'call GB':>8}  agreement")
    for tool, r in rows:
        ok = r["inputs_first"] and r["new_are_copies_of_own_class"] and r["counts"] == first["counts"]
        print(f"{tool:<46} {r['seconds']:>8.3f} {(r['n_out'] - r['n_in']) / r['seconds']:>10,.0f} "
              f"{r['peak_rss_gb']:>8.2f} {r['call_rss_gb']:>8.2f}  {'yes' if ok else 'NO'} "
              f"(sha256 {r['sha256'][:12]})")
    for tool, r in rows[1:]:
        print(f"diffbalance vs {tool}: {r['seconds'] / first['seconds']:.2f}x its speed, "
              f"{first['peak_rss_gb'] / r['peak_rss_gb']:.2f}x its peak memory, "
              f"{call_ratio(first, r)} its call's memory (imports and arrays left out: "
              f"{first['before_call_rss_gb']:.2f} vs {r['before_call_rss_gb']:.2f} GB; torch's import alone ~0.5 GB)")
    if args.json:
        args.json.write_text(json.dumps({"n_min": args.n_min, "rows": [{"tool": t, **r} for t, r in rows]},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
