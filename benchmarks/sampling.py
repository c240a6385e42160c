"""Compare CFG samplers on one generator and one reference classifier (run by hand; prints a table).

    python benchmarks/sampling.py [--generator DIR] [--images-per-class 8] [--guidance-w 7.5] [--device auto]

Without --generator a tiny generator is trained on imbalanced Fashion-MNIST (linear profile, 60..600 per class)
into --workdir first. The reference classifier (small_cnn) is trained on the balanced real training set.
Rows: DDPM with all T steps (paper-faithful), DDIM-50, DPM-Solver++(2M)-20 (ODE) and SDE-DPM-Solver++(2M)-20. Columns: images/s, network
evaluations per image (a guided step costs 2: the conditional and null halves, batched in one forward),
and class consistency (% of images the reference classifier assigns to the intended class).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.device import describe, resolve_device
from diffbalance.evaluate.consistency import class_consistency
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.generator import load_generator
from diffbalance.generate.cfg.sampling import build_sampler
from diffbalance.generate.cfg.train import train_generator
from diffbalance.seeding import derive_seed

SETTINGS = (("ddpm", None), ("ddim", 50), ("dpmpp", 20), ("dpmpp-sde", 20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", type=Path, help="a trained generator folder (default: train a tiny one)")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-sampling"))
    ap.add_argument("--images-per-class", type=int, default=8)
    ap.add_argument("--guidance-w", type=float, default=7.5)
    ap.add_argument("--batch-size", type=int, default=80)
    ap.add_argument("--classifier-epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = ap.parse_args()
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


def _train_tiny(train: ImageSet, workdir: Path, device: torch.device) -> Path:
    from diffbalance.imbalance.profiles import profile_counts
    from diffbalance.imbalance.subset import make_imbalanced

    imbalanced = make_imbalanced(train, profile_counts("linear", train.counts(), n_min=60), profile="linear")
    return train_generator(imbalanced, CFGTrainConfig(model_size="tiny"), workdir / "generator", device)


if __name__ == "__main__":
    main()
