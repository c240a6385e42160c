"""FID feature-extraction speed (ours: resize on the device, batched) vs a naive reference (PIL resize per image),
and FID of N CIFAR-10 train vs N test JPEGs.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fid.py [--n-speed 256] [--n-fid 1000] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffbalance.data.imageset import ImageSet
from diffbalance.data.sources import DataConfig, load_train_test
from diffbalance.device import describe, resolve_device
from diffbalance.evaluate.fid import FidConfig, fid, load_inception
from diffbalance.seeding import generator

def cifar_subset(data: ImageSet, n: int, seed: int) -> ImageSet:
    """n seeded-random images of a CIFAR-10 split (found the usual way: data.root, env vars, ../shared, download)."""
    pick = torch.randperm(len(data), generator=generator(seed))[:n].sort().values
    return data.subset(pick, source=f"{data.source} ({n}, seed {seed})")


def naive_features(net, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The reference many scripts use: PIL bilinear resize one image at a time on the CPU, then the network."""
    out = []
    for i in range(0, len(images), batch_size):
        batch = [
            torch.from_numpy(np.array(Image.fromarray(im.permute(1, 2, 0).numpy()).resize((299, 299), Image.BILINEAR)))
            for im in images[i : i + batch_size]
        ]
        x = torch.stack(batch).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1.0  # (B, 3, 299, 299)
        with torch.inference_mode():
            out.append(net(x).cpu())
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-speed", type=int, default=256)
    p.add_argument("--n-fid", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--cifar-root", default=None, help="CIFAR-10 folder (default: the usual search)")
    args = p.parse_args()
    device = resolve_device(args.device)
    ext = load_inception(args.weights, device, args.batch_size, "bilinear-torch", allow_download=False)
    result = {"device": describe(device), "weights": ext.weights_path, "weights_sha256": ext.checksum,
              "dtype": "float32", "batch_size": args.batch_size}

    cifar_train, cifar_test = load_train_test(DataConfig(name="cifar10", root=args.cifar_root))
    images = cifar_subset(cifar_train, args.n_speed, seed=1).images
    ext(images[: args.batch_size])  # warm-up
    t = time.perf_counter()
    ours = ext(images)
    result["ours_images_per_s"] = args.n_speed / (time.perf_counter() - t)
    t = time.perf_counter()
    ref = naive_features(ext.net, images, args.batch_size, device)
    result["naive_pil_images_per_s"] = args.n_speed / (time.perf_counter() - t)
    result["max_abs_feature_diff_ours_vs_pil"] = float((ours - ref).abs().max())
    result["n_speed_images"] = args.n_speed
    print(json.dumps(result, indent=1), flush=True)

    if args.n_fid:
        train, test = cifar_subset(cifar_train, args.n_fid, seed=0), cifar_subset(cifar_test, args.n_fid, seed=0)
        cfg = FidConfig(weights_path=ext.weights_path, batch_size=args.batch_size, cache=False)
        r = fid(train, test, cfg, device, extractor=ext)
        result["fid_train_vs_test"] = {k: r[k] for k in ("fid", "n_a", "n_b", "resize", "seconds")}
        print(json.dumps(result["fid_train_vs_test"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
