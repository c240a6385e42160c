"""The cost curve of a set larger than memory: time and peak memory per stage against the number of images.

    python benchmarks/scale_data.py --sizes 10000 50000 200000 --cifar ../shared/data/cifar10-jpeg \
        --work /tmp/scale --out results/cpu/scale-data [--side 128] [--features random|inception] [--keep]

For each N: a folder of N PNGs at --side px (CIFAR-10 training images upsampled, bilinear; image i is CIFAR image
i mod 50,000, mirrored on every other pass so no two files are the same) in 10 classes, classes 5–9 with half the
images of classes 0–4 (an oversample fill to balance then adds a third of N). Then, each stage in a fresh process
(its peak RSS from wait4, its wall time from the parent), on the on-disk image store ($DIFFBALANCE_STORE=disk):

    store   decode the folder into the store (data.folder_store)
    fill    oversample to balance: the fill's PNGs written, then read back into a store of their own
    epoch   one epoch of the small CNN (--batch, 128 by default) on the real images + the fill, batches from
            DataLoader workers; its peak is the process (~1 GB) plus the activations, which grow with the batch
    fid     FID of the set against itself (--features: `random`, the fixed random conv net, by default — on the
            CPU the Inception network at 299 px runs ~10 img/s and is GPU work; its statistics stream the same way)

Writes scale.json (every row and the fitted seconds per image of each stage, with the 1 M estimate), scale.md (the
table) and scale.png (time and peak RSS against N) to --out. The folder preparation is not timed. The work folder is
emptied after each N unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STAGES = ("store", "fill", "epoch", "fid")
CLASSES = 10


def class_counts(n: int) -> list[int]:
    """Classes 0–4 at 2u images, 5–9 at u (u = n / 15), the remainder to class 0."""
    unit = n // 15
    counts = [2 * unit] * 5 + [unit] * 5
    counts[0] += n - sum(counts)
    return counts


def make_folder(root: Path, n: int, side: int, cifar: Path) -> None:
    """N PNGs (compress level 1) upsampled from the CIFAR-10 training images, in class folders c0 … c9."""
    from PIL import Image, ImageOps

    from diffbalance.data.sources import DataConfig, load_train_test

    train, _ = load_train_test(DataConfig(name="cifar10", root=str(cifar)))
    pixels = train.images.permute(0, 2, 3, 1).numpy()  # (50000, 32, 32, 3)
    i = 0
    for c, count in enumerate(class_counts(n)):
        folder = root / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            big = Image.fromarray(pixels[i % len(pixels)]).resize((side, side), Image.BILINEAR)
            if (i // len(pixels)) % 2:
                big = ImageOps.mirror(big)
            big.save(folder / f"{k:06d}.png", compress_level=1)
            i += 1


def run_stage(stage: str, root: Path, work: Path, features: str, batch: int) -> None:
    """One stage, in this process (the parent measures it)."""
    import torch

    from diffbalance.data.image_folder import load_image_folder

    torch.manual_seed(0)
    data = load_image_folder(root, channels=3)
    if stage == "store":
        return
    from diffbalance.rebalance.registry import build_rebalancer
    from diffbalance.rebalance.store import fill

    fill_set = fill(build_rebalancer("oversample", {"random_state": 0}), data, work / "fill", progress=False)
    if stage == "fill":
        return
    if stage == "epoch":
        from diffbalance.classify.config import TrainConfig
        from diffbalance.classify.train import train_classifier

        config = TrainConfig(model="small_cnn", epochs=1, batch_size=batch, lr=0.05, warmup_epochs=0.0,
                             checkpoint_every_epochs=0)
        train_classifier(data.concat(fill_set), config, device="cpu", seed=0, progress=False)
        return
    from diffbalance.evaluate.fid.embedder import Embedder
    from diffbalance.evaluate.fid.frechet import frechet_distance
    from diffbalance.evaluate.fid.protocol import FidConfig, build_extractor

    extractor = build_extractor(FidConfig(features=features), torch.device("cpu"))
    stats = Embedder(extractor)(data.images).stats
    print(json.dumps({"fid_self": float(frechet_distance(stats, stats)), "n": stats.n}))


def measure(stage: str, root: Path, work: Path, features: str, batch: int, env: dict) -> dict:
    """Wall seconds and peak RSS (MiB: ru_maxrss of the stage process, its largest) of the stage in a child process."""
    argv = [sys.executable, __file__, "--stage", stage, "--root", str(root), "--work", str(work),
            "--features", features, "--batch", str(batch)]
    tic = time.perf_counter()
    child = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - tic
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} failed (exit {os.waitstatus_to_exitcode(status)})")
    row = {"stage": stage, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}
    return {**row, "batch": batch} if stage == "epoch" else row


def curve(row: dict) -> str:
    """A row's curve: its stage, the epoch's per batch size."""
    return f"epoch, batch {row['batch']}" if row["stage"] == "epoch" else row["stage"]


def curves(rows: list[dict]) -> list[str]:
    return sorted({curve(r) for r in rows}, key=lambda c: (STAGES.index(c.split(',')[0]), c))


def fit(rows: list[dict]) -> dict:
    """Per curve: seconds = a + b·N by least squares; b (s/image), a, and the estimate at 1 M images."""
    out = {}
    for name in curves(rows):
        pts = [(r["images"], r["seconds"]) for r in rows if curve(r) == name]
        if len(pts) < 2:
            continue
        n, s = np.array(pts, dtype=float).T
        b, a = np.polyfit(n, s, 1)
        out[name] = {"seconds_per_image": b, "intercept_s": a, "estimate_1M_s": a + b * 1e6}
    return out


def table(rows: list[dict]) -> str:
    lines = ["| images | stage | seconds | peak RSS (MiB) |", "|---|---|---|---|"]
    lines += [f"| {r['images']:,} | {curve(r)} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for name in curves(rows):
        n, s, m = zip(*sorted((r["images"], r["seconds"], r["peak_rss_mb"]) for r in rows if curve(r) == name))
        ax_t.plot(n, s, "o-", label=name)
        ax_m.plot(n, m, "o-", label=name)
    ax_t.set(xlabel="images", ylabel="wall seconds", title="time per stage")
    ax_m.axhline(2.5e9 / 2**20, color="grey", linestyle="--", label="2.5 GB")
    ax_m.set(xlabel="images", ylabel="peak RSS (MiB)", title="peak memory per stage")
    sizes = sorted({r["images"] for r in rows})
    for ax in (ax_t, ax_m):
        ax.set_xticks(sizes, [f"{n // 1000}k" for n in sizes])
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--cifar", type=Path, default=Path("../shared/data/cifar10-jpeg"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/diffbalance-scale"))
    ap.add_argument("--out", type=Path, default=Path("results/cpu/scale-data"))
    ap.add_argument("--features", default="random")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--batch", type=int, default=128, help="the epoch's batch size")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # the child's one stage
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        return run_stage(args.stage, args.root, args.work, args.features, args.batch)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "scale.json"
    rows = json.loads(previous.read_text())["rows"] if previous.is_file() else []
    for n in args.sizes:
        work = args.work / f"n{n}"
        root = work / "images"
        if not root.is_dir():
            tic = time.perf_counter()
            make_folder(root, n, args.side, args.cifar)
            print(f"{n} images written in {time.perf_counter() - tic:.0f} s", flush=True)
        env = {**os.environ, "DIFFBALANCE_STORE": "disk", "DIFFBALANCE_CACHE": str(work / "cache")}
        for stage in args.stages:
            row = {"images": n, "side": args.side, **measure(stage, root, work, args.features, args.batch, env)}
            rows = [r for r in rows if (r["images"], curve(r)) != (n, curve(row))] + [row]
            print(json.dumps(row), flush=True)
            (args.out / "scale.json").write_text(json.dumps(
                {"rows": rows, "fit": fit(rows), "features": args.features, "cpu_count": os.cpu_count(),
                 "machine": platform.processor() or platform.machine()}, indent=1))
        if not args.keep:
            shutil.rmtree(work)
    order = curves(rows)
    rows.sort(key=lambda r: (r["images"], order.index(curve(r))))
    (args.out / "scale.md").write_text(table(rows) + "\n")
    plot(rows, args.out / "scale.png")
    print(table(rows))


if __name__ == "__main__":
    main()
