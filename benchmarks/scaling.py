"""Scaling over processes: images/s of CFG generation (a sharded fill) and of classifier training (DDP, the same
global batch) at world size 1, 2, … — each world size launched with torchrun in the same run — and the scaling
efficiency, throughput(N) / (N × throughput(1)).

    python benchmarks/scaling.py                       # CPU: gloo processes, 1 thread each, world sizes 1 2
    python benchmarks/scaling.py --device cuda --world-sizes 1 2 4 8 --model-size small --images 8192

On the CPU every process gets one thread, so world size N uses N cores: the figure shows how well the work is
split and how much the collectives and per-process start-up cost. It does not show GPU scaling (NCCL over
NVLink, with the GPU's own throughput per process); on a 2-core machine world size 2 is also the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def tiny_data(n: int, side: int, channels: int):
    from diffbalance.data.imageset import ImageSet

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    base = (labels.float() * 25).view(-1, 1, 1, 1).expand(n, channels, side, side)
    noise = torch.randint(-20, 21, (n, channels, side, side), generator=g)
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    return ImageSet(images, labels, tuple(str(c) for c in range(10)), "bench")


def worker(args) -> None:
    """One rank of a launched measurement; rank 0 prints {"img_s": ...}."""
    from diffbalance.infra import distributed
    from diffbalance.infra.device import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    d = distributed.current()
    if args.task == "generate":
        from diffbalance.rebalance.registry import build_rebalancer
        from diffbalance.rebalance.store import fill

        data = tiny_data(20, args.side, args.channels)  # 2 real images per class: every image is a fill image
        per_class = args.images // 10
        reb = build_rebalancer("cfg", {"checkpoint": args.generator, "sampler": "ddim",
                                       "num_inference_steps": args.steps, "batch_size": args.batch, "guidance_w": 2.0,
                                       "device": device, "sampling_strategy": {c: 2 + per_class for c in range(10)}})
        out = Path(args.out) / f"fill-{d.world_size}"
        distributed.barrier()
        start = time.perf_counter()
        fill(reb, data, out, progress=False)
        distributed.barrier()
        made = per_class * 10
    else:
        from diffbalance.classify.config import TrainConfig
        from diffbalance.classify.train import train_classifier

        data = tiny_data(args.images, args.side, args.channels)
        cfg = TrainConfig(model=args.classifier, epochs=1, batch_size=args.batch * 4, warmup_epochs=0)
        train_classifier(data, cfg, device=device, seed=0, progress=False)  # warm-up (allocations, compile)
        distributed.barrier()
        start = time.perf_counter()
        train_classifier(data, cfg.replace(epochs=args.epochs), device=device, seed=1, progress=False)
        distributed.barrier()
        made = len(data) // cfg.batch_size * cfg.batch_size * args.epochs
    if d.is_main:
        print(json.dumps({"img_s": made / (time.perf_counter() - start)}))
    distributed.shutdown()


def launch(args, task: str, world: int, generator: str, out: str) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}", __file__,
           "--worker", "--task", task, "--generator", generator, "--out", out]
    for key in ("device", "images", "side", "channels", "steps", "batch", "threads", "classifier", "epochs"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        sys.exit(f"world size {world} failed:\n{done.stderr[-3000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])["img_s"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--model-size", default="tiny", help="CFG UNet size (tiny | small | paper)")
    p.add_argument("--images", type=int, default=2000, help="fill images / classifier training images")
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="sampler steps (ddim)")
    p.add_argument("--batch", type=int, default=32, help="sampling batch; the classifier's global batch is 4×")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--classifier", default="small_cnn")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--task", default="generate", help=argparse.SUPPRESS)
    p.add_argument("--generator", default="", help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    from diffbalance.generate.cfg.config import CFGTrainConfig
    from diffbalance.generate.cfg.train import train_generator

    with tempfile.TemporaryDirectory() as tmp:
        generator = str(Path(tmp) / "generator")  # an untrained-quality generator: the speed is what is measured
        train_generator(tiny_data(200, args.side, args.channels),
                        CFGTrainConfig(model_size=args.model_size, train_steps=2, warmup_steps=1), generator,
                        device=args.device, progress=False)
        rows = []
        for task in ("generate", "classify"):
            base = None
            for world in args.world_sizes:
                img_s = launch(args, task, world, generator, tmp)
                base = base or img_s / world
                rows.append((task, world, img_s, img_s / (world * base)))
    print(f"device {args.device}, {args.threads} thread(s) per process; generate: {args.model_size} UNet, ddim "
          f"{args.steps} steps, {args.images} images {args.channels}×{args.side}×{args.side}; classify: "
          f"{args.classifier}, {args.images} images, global batch {args.batch * 4}, {args.epochs} epochs")
    print(f"{'task':>9} {'processes':>9} {'img/s':>9} {'efficiency':>10}")
    for task, world, img_s, eff in rows:
        print(f"{task:>9} {world:>9} {img_s:>9.1f} {eff:>9.0%}")


if __name__ == "__main__":
    main()
