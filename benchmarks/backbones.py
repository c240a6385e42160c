"""One training epoch of an ImageNet-stem backbone against the CIFAR-stem network of the same depth, same images.

    python benchmarks/backbones.py [--sizes 32 128] [--images 128] [--batch 32] [--repeats 2] [--device cpu]
                                   [--models timm/resnet18 resnet18] [--json FILE]

For each image side and model: `train_classifier` for one epoch on --images synthetic uint8 images of two classes
(the backbone at its input size = the images' side, random init: the cost does not depend on the weights), timed
--repeats times, the fastest kept (timeit's rule). The CIFAR stem (3×3 conv, stride 1, no max-pool) keeps the full
resolution into layer1, so at 128 px its residual stages see 16× the positions the ImageNet stem (7×7 stride 2 +
max-pool) leaves them: the gap grows with the side. Prints img/s per (side, model) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet


def images(n: int, side: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    return ImageSet(torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8), labels, ("a", "b"))


def epoch_seconds(model: str, data: ImageSet, batch: int, device: str, repeats: int) -> float:
    extra = {"input_size": data.image_size[0]} if "/" in model else {}
    config = TrainConfig(model=model, epochs=1, batch_size=batch, lr=0.01, warmup_epochs=0.0,
                         checkpoint_every_epochs=0, **extra)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        train_classifier(data, config, device=device, seed=0, progress=False)
        best = min(best, time.perf_counter() - tic)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--models", nargs="+", default=["timm/resnet18", "resnet18"])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for side in args.sizes:
        data = images(args.images, side)
        for model in args.models:
            seconds = epoch_seconds(model, data, args.batch, args.device, args.repeats)
            rows.append({"side": side, "model": model, "epoch_s": seconds, "img_s": args.images / seconds})
            print(f"{side:>4} px  {model:<16} one epoch of {args.images} images: {seconds:7.2f} s "
                  f"({args.images / seconds:8.1f} img/s)", flush=True)
        first, second = (r for r in rows if r["side"] == side)
        print(f"{side:>4} px  {first['model']} is {second['epoch_s'] / first['epoch_s']:.2f}× as fast as "
              f"{second['model']}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
