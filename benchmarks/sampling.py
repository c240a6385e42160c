"""Compare CFG samplers on one generator and one reference classifier (run by hand; prints a table).

    python benchmarks/sampling.py [--generator DIR] [--images-per-class 8] [--guidance-w 7.5] [--device auto]
    python benchmarks/sampling.py --speed [--device cuda] [--model-size small] [--batch 512] [--steps 20]
                                  [--sampler dpmpp] [--generator DIR]
    python benchmarks/sampling.py --peer [--device cpu] [--batch 64] [--images 128] [--steps 20] [--generator DIR]

Without --generator a tiny generator is trained on imbalanced Fashion-MNIST (linear profile, 60..600 per class)
into --workdir first. The reference classifier (small_cnn) is trained on the balanced real training set.
Rows: DDPM with all T steps (paper-faithful), DDIM-50, DPM-Solver++(2M)-20 (ODE) and SDE-DPM-Solver++(2M)-20. Columns: images/s, network
evaluations per image (a guided step costs 2: the conditional and null halves, batched in one forward),
and class consistency (% of images the reference classifier assigns to the intended class).

--speed: images/s of the CFG sampler at --steps against the naive reference, DDPM's ancestral sampler over all
T = 1000 steps (Ho et al. 2020, Alg. 2), with the same model in the same run; fp32 against bf16 (CUDA only); and
the mean |pixel difference| between bf16 and fp32 images of the same seeds (grey levels 0–255), beside that of two
different seeds for scale. Without --generator the UNet of --model-size has random weights (CIFAR-10 shape):
speed does not depend on the weights, but the bf16 difference then measures round-off on an untrained network —
pass a trained generator to judge quality. On the CPU the defaults are the tiny model and a few images (~1–2 min
on 2 cores); on CUDA `small`, batches of 512. A sampling batch never waits for the GPU before its final copy.

--peer: diffbalance's guided DPM-Solver++(2M) sampler (`build_sampler`) against the loop a diffusers user writes
(`plain_diffusers`: DPMSolverMultistepScheduler with x̂_0 thresholded at ±1, per-image generators through
`randn_tensor`, the conditional and null halves in one forward, eq. 8), on the same UNet, labels and seeds, each
in its own fresh process (peak RSS read inside it; both import this file, so the same modules): images/s, peak
memory and the largest pixel difference between the two (0: the same images). Defaults: batches of 64 (CPU; 512
on CUDA), two batches timed after a 2-step warm-up.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from typing import get_args

import torch

from peak_memory import rss_gb  # benchmarks/peak_memory.py (this script's folder is on sys.path)

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.device import describe, resolve_device
from diffbalance.evaluate.consistency import class_consistency
from diffbalance.generate.cfg.config import CFGTrainConfig, Sampler
from diffbalance.generate.cfg.generator import load_generator
from diffbalance.generate.cfg.sampling import build_sampler
from diffbalance.generate.cfg.train import train_generator
from diffbalance.generate.cfg.unet import build_unet
from diffbalance.infra.seeding import derive_seed, forked_rng

SETTINGS = (("ddpm", None), ("ddim", 50), ("dpmpp", 20), ("dpmpp-sde", 20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed", action="store_true", help="time the sampler (no data, no classifier)")
    ap.add_argument("--peer", action="store_true", help="the guided sampler vs a plain diffusers loop, same UNet")
    ap.add_argument("--generator", type=Path, help="a trained generator folder (default: train a tiny one)")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-sampling"))
    ap.add_argument("--images-per-class", type=int, default=8)
    ap.add_argument("--guidance-w", type=float, default=7.5)
    ap.add_argument("--batch-size", type=int, default=80)
    ap.add_argument("--classifier-epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    speed_options = ap.add_argument_group("--speed and --peer")
    speed_options.add_argument("--model-size", choices=("tiny", "small", "paper"), help="default: small (CUDA), tiny")
    speed_options.add_argument("--batch", type=int, help="images per sampling batch (default: 512 on CUDA, 2; "
                               "--peer: 64 on the CPU)")
    speed_options.add_argument("--steps", type=int, default=20, help="denoising steps of --sampler")
    speed_options.add_argument("--sampler", choices=[s for s in get_args(Sampler) if s != "ddpm"], default="dpmpp")
    speed_options.add_argument("--images", type=int, help="images timed per setting (default: 4 batches)")
    speed_options.add_argument("--reference-images", type=int, help="images of the DDPM-1000 reference "
                               "(default: one batch)")
    args = ap.parse_args()
    if args.peer:
        return peer(args)
    if args.speed:
        return speed(args)
    device = resolve_device(args.device)

    from diffbalance.classify.config import TrainConfig
    from diffbalance.classify.train import train_classifier
    from diffbalance.data.sources import DataConfig, load_train_test

    train, _ = load_train_test(DataConfig(name="fashion-mnist"))
    generator_dir = args.generator or _train_tiny(train, args.workdir, device)
    gen = load_generator(generator_dir, device)
    info = gen.info
    classifier = train_classifier(train, TrainConfig(model="small_cnn", epochs=args.classifier_epochs, warmup_epochs=min(1.0, args.classifier_epochs / 4)), device=device, seed=0)

    labels = [c for c in range(info["num_classes"]) for _ in range(args.images_per_class)]
    seeds = [derive_seed(0, c, i) for c in range(info["num_classes"]) for i in range(args.images_per_class)]
    rows = []
    for sampler, steps in SETTINGS:
        run = build_sampler(gen.unet, gen.noise_schedule, sampler, steps, args.guidance_w, gen.image_size)
        n_steps = run.steps
        tic = time.perf_counter()
        images = torch.cat([run(labels[k : k + args.batch_size], seeds[k : k + args.batch_size])
                            for k in range(0, len(seeds), args.batch_size)])
        seconds = time.perf_counter() - tic
        fills = ImageSet(images, torch.tensor(labels), tuple(info["class_names"]), f"{sampler}-{n_steps}")
        score = class_consistency(classifier.predict, fills)
        nfe = n_steps * (2 if args.guidance_w != 0 else 1)
        rows.append({"sampler": f"{sampler}-{n_steps}", "images_per_s": len(images) / seconds, "nfe_per_image": nfe,
                     "consistency_pct": score["agreement_pct"], "images": len(images)})
    print(f"\ngenerator {generator_dir}, w = {args.guidance_w} (ho), {len(seeds)} images, device {describe(device)}")
    print(f"{'sampler':<12} {'images/s':>9} {'NFE/image':>10} {'consistency %':>14}")
    for r in rows:
        print(f"{r['sampler']:<12} {r['images_per_s']:>9.2f} {r['nfe_per_image']:>10d} {r['consistency_pct']:>14.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def speed(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (512 if cuda else 2)
    images = args.images or 4 * batch
    reference_images = args.reference_images or batch  # one batch of the same size: a like-for-like batch
    unet, schedule, num_classes, what = _speed_model(args, device)
    w = args.guidance_w
    labels = [k % num_classes for k in range(max(images, reference_images))]
    seeds = [derive_seed(0, k) for k in range(len(labels))]

    def timed(sampler: str, steps: int | None, bf16: bool, n: int) -> tuple[torch.Tensor, float, int]:
        run = build_sampler(unet, schedule, sampler, steps, w, bf16=bf16)
        warm_up = build_sampler(unet, schedule, "ddim", 2, w, bf16=bf16)  # the same network calls, 2 steps
        warm_up(labels[: min(n, batch)], seeds[: min(n, batch)])  # kernels loaded and chosen, memory pooled
        tic = time.perf_counter()
        out = torch.cat([run(labels[k : min(k + batch, n)], seeds[k : min(k + batch, n)])
                         for k in range(0, n, batch)])
        return out, n / (time.perf_counter() - tic), run.steps * (2 if w else 1)  # uint8 on the CPU: synced

    rows, out = [], {}
    settings = [(args.sampler, args.steps, False, images)] + ([(args.sampler, args.steps, True, images)] if cuda else [])
    for sampler, steps, bf16, n in [*settings, ("ddpm", None, False, reference_images)]:
        out[sampler, bf16], images_s, nfe = timed(sampler, steps, bf16, n)
        rows.append({"sampler": sampler, "precision": "bf16" if bf16 else "fp32", "nfe_per_image": nfe, "images": n,
                     "images_per_s": images_s})
    reference = rows[-1]["images_per_s"]
    print(f"\n{what}, w = {w} (ho), batch {batch}, device {describe(device)}")
    print(f"{'sampler':<10} {'precision':<9} {'NFE/image':>9} {'images':>7} {'images/s':>10} {'vs DDPM-1000':>13}")
    for r in rows:
        r["speedup_vs_reference"] = r["images_per_s"] / reference
        print(f"{r['sampler']:<10} {r['precision']:<9} {r['nfe_per_image']:>9d} {r['images']:>7d} "
              f"{r['images_per_s']:>10.3g} {r['speedup_vs_reference']:>12.1f}x")
    fp32 = out[args.sampler, False]
    half = len(fp32) // 2
    other_seeds = (fp32[:half].int() - fp32[half : 2 * half].int()).abs().float().mean().item()
    summary = {"rows": rows, "mean_abs_diff_other_seeds": other_seeds}
    if cuda:
        diff = (out[args.sampler, True].int() - fp32.int()).abs().float()
        off = 100 * (diff > 8).float().mean().item()
        summary.update(mean_abs_diff_bf16_fp32=diff.mean().item(), pct_pixels_off_by_8=off)
        print(f"bf16 vs fp32, same seeds: mean |Δpixel| {diff.mean():.2f} grey levels, {off:.2f} % of pixels off "
              f"by > 8 (two different seeds: {other_seeds:.1f})")
    else:
        print(f"bf16: CUDA only (the CPU samples in fp32); two different seeds differ by {other_seeds:.1f} grey levels")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


def plain_diffusers(unet, noise_schedule: dict, class_labels: list[int], seeds: list[int], steps: int,
                    w: float) -> torch.Tensor:
    """The guided DPM-Solver++(2M) loop as a diffusers user writes it: uint8 images (B, C, H, W) on the CPU."""
    from diffusers import DPMSolverMultistepScheduler
    from diffusers.utils.torch_utils import randn_tensor

    device = unet.device
    scheduler = DPMSolverMultistepScheduler.from_config({**noise_schedule, "algorithm_type": "dpmsolver++",
                                                         "solver_order": 2, "thresholding": True,
                                                         "sample_max_value": 1.0})
    scheduler.set_timesteps(steps)
    gens = [torch.Generator(device).manual_seed(s) for s in seeds]  # image k from seeds[k] alone
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    x = randn_tensor((len(seeds), unet.config.in_channels, *size), generator=gens, device=device)
    x = x * scheduler.init_noise_sigma
    labels = torch.tensor(class_labels, device=device)
    both = torch.cat([labels, torch.full_like(labels, unet.config.num_class_embeds - 1)])  # then the null class ∅
    with torch.no_grad():
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t)
            eps_c, eps_u = unet(torch.cat([x_in, x_in]), t, class_labels=both).sample.chunk(2)
            x = scheduler.step((1 + w) * eps_c - w * eps_u, t, x).prev_sample  # eq. 8, Ho's w
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def peer_job(kind: str, args: argparse.Namespace) -> dict:
    """One sampler in this (fresh) process: warm-up, then `args.images` images timed in batches of `args.batch`."""
    device = resolve_device(args.device)
    unet, schedule, num_classes, what = _speed_model(args, device)
    labels = [k % num_classes for k in range(args.images)]
    seeds = [derive_seed(0, k) for k in range(args.images)]
    if kind == "diffbalance":
        run, warm_up = (build_sampler(unet, schedule, "dpmpp", steps, args.guidance_w) for steps in (args.steps, 2))
    else:
        def run(lab, sd):
            return plain_diffusers(unet, schedule, lab, sd, args.steps, args.guidance_w)

        def warm_up(lab, sd):
            return plain_diffusers(unet, schedule, lab, sd, 2, args.guidance_w)
    warm_up(labels[: args.batch], seeds[: args.batch])  # kernels loaded, memory pooled
    tic = time.perf_counter()
    images = torch.cat([run(labels[k : k + args.batch], seeds[k : k + args.batch])
                        for k in range(0, args.images, args.batch)])
    seconds = time.perf_counter() - tic
    return {"images": images, "seconds": seconds, "images_per_s": args.images / seconds,
            "peak_rss_gb": rss_gb(), "what": what, "device": describe(device)}


def peer(args: argparse.Namespace) -> None:
    cuda = resolve_device(args.device).type == "cuda"
    args.batch = args.batch or (512 if cuda else 64)
    args.images = args.images or 2 * args.batch
    results = {}
    for kind in ("diffbalance", "diffusers"):  # each in a new interpreter: its own peak memory, no shared state
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            results[kind] = pool.apply(peer_job, (kind, args))
    ours, theirs = results["diffbalance"], results["diffusers"]
    diff = int((ours["images"].int() - theirs["images"].int()).abs().max())
    print(f"\n{ours['what']}, w = {args.guidance_w} (ho), DPM-Solver++(2M) {args.steps} steps, batch {args.batch}, "
          f"{args.images} images, device {ours['device']}; each sampler in a fresh process after a 2-step warm-up")
    print(f"{'sampler':<34} {'seconds':>8} {'images/s':>9} {'peak GB':>8}")
    for name, r in (("diffbalance build_sampler", ours), ("plain diffusers loop", theirs)):
        print(f"{name:<34} {r['seconds']:>8.2f} {r['images_per_s']:>9.3g} {r['peak_rss_gb']:>8.2f}")
    print(f"diffbalance / diffusers: {ours['images_per_s'] / theirs['images_per_s']:.2f}x the images/s, "
          f"{ours['peak_rss_gb'] / max(theirs['peak_rss_gb'], 1e-9):.2f}x the peak memory; max |pixel difference| "
          f"{diff} grey levels{' (the same images)' if diff == 0 else ''}")
    if args.json:
        args.json.write_text(json.dumps({kind: {k: v for k, v in r.items() if k != "images"}
                                         for kind, r in results.items()} | {"max_abs_pixel_diff": diff}, indent=2))


def _speed_model(args: argparse.Namespace, device: torch.device):
    """(unet, noise schedule, classes, description): a trained generator, or a random UNet of --model-size."""
    if args.generator:
        gen = load_generator(args.generator, device)
        return gen.unet, gen.noise_schedule, gen.num_classes, f"generator {args.generator}"
    size = args.model_size or ("small" if device.type == "cuda" else "tiny")
    with forked_rng(0):
        unet = build_unet(size, 10, 3, (32, 32)).to(device).eval().requires_grad_(False)
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    return unet, CFGTrainConfig().noise_schedule(), 10, f"random {size} UNet ({params:.1f}M, 3x32x32, 10 classes)"


def _train_tiny(train: ImageSet, workdir: Path, device: torch.device) -> Path:
    from diffbalance.imbalance.profiles import profile_counts
    from diffbalance.imbalance.subset import make_imbalanced

    imbalanced = make_imbalanced(train, profile_counts("linear", train.counts(), n_min=60), profile="linear")
    return train_generator(imbalanced, CFGTrainConfig(model_size="tiny"), workdir / "generator", device)


if __name__ == "__main__":
    main()
