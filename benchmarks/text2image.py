"""Throughput of the `ldm` rebalancer: images/s at the pipeline's size, and after the downscale to 32×32.

For users with real weights on a GPU:
    python benchmarks/text2image.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --steps 25 --batch-size 8
    python benchmarks/text2image.py --model stabilityai/sd-turbo --steps 1 --guidance-w 0 --scheduler default
Smoke run without weights (tiny random pipeline, CPU; numbers say nothing about real models):
    python benchmarks/text2image.py --tiny
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import describe, resolve_device
from diffbalance.generate.text2image.postprocess import to_dataset_images
from diffbalance.rebalance.registry import build_rebalancer
from diffbalance.infra.seeding import derive_seed


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="stable-diffusion-v1-5/stable-diffusion-v1-5")
    p.add_argument("--tiny", action="store_true", help="tiny random pipeline from tests/tiny_sd.py (smoke run)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance-w", type=float, default=6.5, help="guidance (paper eq. 8); 6.5 ho = diffusers' 7.5")
    p.add_argument("--guidance-convention", default="ho", choices=("ho", "sd"), help="ho: Ho's w | sd: s = 1 + w")
    p.add_argument("--scheduler", default="dpmpp")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--count", type=int, default=32, help="images timed (after one warm-up batch)")
    p.add_argument("--size", type=int, default=32, help="dataset side the images are downscaled to")
    p.add_argument("--gen-size", type=int, default=None, help="generated side; default the model's own")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_sd import save_tiny_sd

        args.model = str(save_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-sd"))
    train = ImageSet(torch.zeros(1, 3, args.size, args.size, dtype=torch.uint8), torch.tensor([0]), ("cat",), "bench")
    reb = build_rebalancer("ldm", {"model": args.model, "num_inference_steps": args.steps, "scheduler": args.scheduler,
                                   "guidance_w": args.guidance_w, "guidance_convention": args.guidance_convention,
                                   "batch_size": args.batch_size,
                                   "height": args.gen_size, "width": args.gen_size})
    start = time.perf_counter()
    reb.prepare(train, device, Path(tempfile.gettempdir()))  # ldm trains nothing: the work folder stays unused
    load_s = time.perf_counter() - start
    seeds = [derive_seed(0, 0, i) for i in range(args.count)]
    batches = [seeds[k : k + args.batch_size] for k in range(0, len(seeds), args.batch_size)]
    reb.sample(0, batches[0])  # warm-up (kernels, allocator)
    sample_s = down_s = 0.0
    for batch in batches:
        t0 = time.perf_counter()
        full, _ = reb.sample(0, batch)  # (B, 3, H, W) float at the pipeline's size
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        to_dataset_images(full, train.image_size, train.channels)  # (B, 3, size, size) uint8
        down_s += time.perf_counter() - t1
        sample_s += t1 - t0
    h, w = reb.size_
    label = "TINY RANDOM WEIGHTS (smoke run, not a real-model number)" if args.tiny else args.model
    print(f"model: {label}")
    print(f"device: {describe(device)}  dtype: {reb.spec_.torch_dtype}  scheduler: {args.scheduler}  "
          f"steps: {args.steps}  guidance: w = {args.guidance_w} ({args.guidance_convention}), "
          f"diffusers' s = {reb.guidance_scale_}  batch: {args.batch_size}  images: {args.count}")
    print(f"load: {load_s:.1f} s")
    print(f"generate at {h}×{w}:            {args.count / sample_s:8.2f} images/s  ({sample_s:.2f} s)")
    print(f"downscale {h}×{w} → {args.size}×{args.size}:  {args.count / down_s:8.1f} images/s  ({down_s:.3f} s)")
    print(f"end to end at {args.size}×{args.size}:       {args.count / (sample_s + down_s):8.2f} images/s")


if __name__ == "__main__":
    main()
