"""FID feature-extraction speed: ours (uint8 batches to the device, resize there, `--batch` images per pass) vs a
naive reference measured in the same run (PIL bilinear resize of each image to 299 and a per-image ToTensor on
the CPU, then the same network on the same device), with the largest feature difference between the two.
Optionally the FID of N CIFAR-10 train vs N test images (`--n-fid`).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fid.py --device cpu --n 24            # ~1 min on 2 cores
    python benchmarks/fid.py --device cuda --n 20480 --batch 256 --json fid-speed.json   # target ≥ 5,000 img/s (H100)

The Inception weights are found as every FID run finds them (--weights, $DIFFBALANCE_FID_WEIGHTS,
../shared/data/fid-inception, $DIFFBALANCE_SHARED); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from diffbalance.infra.device import describe, resolve_device
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.evaluate.fid import FidConfig, fid, load_inception
from diffbalance.evaluate.fid.features import WEIGHTS_ENV, conv_settings
from diffbalance.infra.seeding import generator


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    """n smooth random uint8 images (n, 3, 32, 32), CIFAR-sized (speed does not depend on the content)."""
    low = torch.rand(n, 3, 8, 8, generator=generator(seed))
    return (torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear") * 255).round().to(torch.uint8)


def cifar_images(n: int, split: str = "train", seed: int = 1, root: str | None = None) -> torch.Tensor:
    """n seeded-random CIFAR-10 images of `split` (found the usual way; no download)."""
    from diffbalance.data.sources import DataConfig, load_train_test

    train, test = load_train_test(DataConfig(name="cifar10", root=root, download=False))
    data = train if split == "train" else test
    pick = torch.randperm(len(data), generator=generator(seed))[:n].sort().values
    return data.images[pick]


def naive_features(net, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The reference many scripts use: per image, PIL bilinear resize to 299 and ToTensor on the CPU; then the
    batch goes to the device and through the network."""
    out = []
    for i in range(0, len(images), batch_size):
        batch = [to_tensor(Image.fromarray(im.permute(1, 2, 0).numpy()).resize((299, 299), Image.BILINEAR))
                 for im in images[i : i + batch_size]]  # each (3, 299, 299) in [0, 1]
        x = torch.stack(batch).to(device) * 2 - 1  # (B, 3, 299, 299) in [-1, 1]
        with torch.inference_mode(), conv_settings(device):
            out.append(net(x).float().cpu())
    return torch.cat(out)


def timed(fn, device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch", "--batch-size", dest="batch", type=int, default=256, help="images per forward pass")
    p.add_argument("--n", "--n-speed", dest="n", type=int, default=32, help="images embedded by ours")
    p.add_argument("--n-naive", type=int, default=None, help="images embedded by the naive reference (default: "
                   "min(n, 1024); its images/s does not need more)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (ours, naive, ours, ...); best of each")
    p.add_argument("--images", choices=("random", "cifar10"), default="random",
                   help="random smooth 32x32 images (default) or CIFAR-10 train images")
    p.add_argument("--n-fid", type=int, default=0, help="also FID of this many CIFAR-10 train vs test images")
    p.add_argument("--weights", default=None, help="Inception weights (TorchScript or .pth)")
    p.add_argument("--cifar-root", default=None, help="CIFAR-10 folder (default: the usual search)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    device = resolve_device(args.device)
    try:
        ext = load_inception(args.weights, device, args.batch, "bilinear-torch", allow_download=False)
    except DiffbalanceError as err:
        sys.exit(f"benchmarks/fid.py needs the FID Inception weights: {err.problem}. Pass --weights PATH or set "
                 f"{WEIGHTS_ENV}=PATH (the TorchScript in ../shared/data/fid-inception is found by itself).")
    images = cifar_images(args.n, root=args.cifar_root) if args.images == "cifar10" else random_images(args.n)
    n_naive = min(args.n, args.n_naive or 1024)

    # Alternating rounds, best of each: the first runs of a TorchScript net profile and optimise it (and cuDNN
    # autotunes), and on a shared machine the best round is the one least disturbed by other work.
    t_ours = t_naive = float("inf")
    for _ in range(args.rounds):
        ours, t = timed(lambda: ext(images), device)
        t_ours = min(t_ours, t)
        ref, t = timed(lambda: naive_features(ext.net, images[:n_naive], args.batch, device), device)
        t_naive = min(t_naive, t)

    result = {
        "device": describe(device), "batch": args.batch, "rounds": args.rounds, "images": args.images,
        "conv_math": ext.conv_math, "weights": ext.weights_path, "weights_sha256": ext.checksum,
        "feature_dtype": "float32",
        "ours": {"n": args.n, "seconds": round(t_ours, 3), "images_per_s": round(args.n / t_ours, 1)},
        "naive_pil": {"n": n_naive, "seconds": round(t_naive, 3), "images_per_s": round(n_naive / t_naive, 1)},
        "speedup": round((args.n / t_ours) / (n_naive / t_naive), 2),
        "max_abs_feature_diff_ours_vs_naive": float((ours[:n_naive] - ref).abs().max()),
        "max_abs_feature": float(ours.abs().max()),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(f"device: {result['device']}   batch {args.batch}   conv math {ext.conv_math}   images {args.images}   "
          f"best of {args.rounds} rounds")
    print(f"{'method':<40} {'images':>7} {'seconds':>9} {'images/s':>10}")
    print(f"{'ours (resize on the device, batched)':<40} {args.n:>7} {t_ours:>9.2f} {args.n / t_ours:>10.1f}")
    print(f"{'naive (PIL resize + ToTensor per image)':<40} {n_naive:>7} {t_naive:>9.2f} {n_naive / t_naive:>10.1f}")
    print(f"ratio ours / naive: {result['speedup']:.2f}x   max |feature difference|: "
          f"{result['max_abs_feature_diff_ours_vs_naive']:.3g} (features up to {result['max_abs_feature']:.3g}; "
          "PIL rounds the resized image to uint8)", flush=True)

    if args.n_fid:
        from diffbalance.data.imageset import ImageSet

        zeros = torch.zeros(args.n_fid, dtype=torch.long)
        a, b = (ImageSet(cifar_images(args.n_fid, split, 0, args.cifar_root), zeros, ("x",), f"cifar10 {split}")
                for split in ("train", "test"))
        cfg = FidConfig(weights_path=ext.weights_path, batch_size=args.batch, cache=False)
        r = fid(a, b, cfg, device, extractor=ext)
        result["fid_train_vs_test"] = {k: r[k] for k in ("fid", "n_a", "n_b", "resize", "seconds")}
        print(json.dumps(result["fid_train_vs_test"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
