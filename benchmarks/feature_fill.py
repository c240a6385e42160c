"""The cost of a feature fill (LDMLR, Han et al. 2024) against an image fill of the same size, in the same run (run by
hand; prints a table).

    python benchmarks/feature_fill.py [--data fashion-mnist|random] [--image-train-steps 30] [--image-samples 32]
                                      [--classifier-epochs 2] [--device auto]

The data, the cut and the image generator are the demo's (src/diffbalance/presets/demo.yaml, read here): Fashion-MNIST
cut to the linear profile 60…600, so a fill up to the largest class adds N = Σ (600 − n_c) = 2700 samples.
`--data random` uses random 1×28×28 images with the same class counts instead (no dataset needed; costs do not
depend on the pixels, only the feature fill's "near own class" column does).

Feature fill: train_classifier's own path (classify.feature_fill) on a small_cnn trained for --classifier-epochs
(stage 1 is common to both kinds of fill and not counted): extract the features of the real images (4 views),
train the default feature model (FeatureFillConfig(): 2000 steps), sample N features; all measured in full (the
seconds the fill's summary records). Its "near own class" row: % of synthetic features nearer to their own
class's mean real feature than to any other class's, beside the same % of the real features themselves (a weak
stage 1 separates its classes only so far): a sanity check of what was sampled, not a quality score.

Image fill: the demo's tiny CFG UNet (its train options, batch 32) and sampler (dpmpp-sde, 20 steps, guided: two
network evaluations per step; w = 2, one of the demo's sweep values, does not change the cost). Training the demo's
1500 steps and sampling N images takes ~15–20 minutes on two CPU cores, so it is measured on fewer and extrapolated:
the training's fixed cost (setup, final save) plus its per-step time over --image-train-steps steps (timed from the
first to the last step's loss call) × 1500; sampling's images/s over --image-samples images × N. Both are linear in
steps and images (fixed shapes, no data-dependent work), so the estimate is the measured rate, not a guess; the
table says which numbers are measured and which are extrapolated.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from diffbalance.infra.threads import configure_threads, passive_waiting

passive_waiting()  # what the CLI does when it starts (before torch is imported): OpenMP sleeps beside busy processes

import torch  # noqa: E402
import yaml  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import diffbalance.generate.cfg.train as cfg_train  # noqa: E402
from diffbalance.classify.train import train_classifier  # noqa: E402
from diffbalance.data.imageset import ImageSet  # noqa: E402
from diffbalance.data.sources import load_train_test  # noqa: E402
from diffbalance.infra.device import describe, resolve_device  # noqa: E402
from diffbalance.experiment.config import ExperimentConfig, preset_text  # noqa: E402
from diffbalance.generate.cfg.config import CFGTrainConfig  # noqa: E402
from diffbalance.generate.cfg.generator import load_generator  # noqa: E402
from diffbalance.generate.cfg.sampling import build_sampler  # noqa: E402
from diffbalance.generate.features.config import FeatureFillConfig  # noqa: E402
from diffbalance.imbalance.subset import apply_profile  # noqa: E402
from diffbalance.infra.seeding import derive_seed  # noqa: E402

GUIDANCE_W = 2.0  # any w > 0 costs the same (the conditional and null halves in one forward)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("fashion-mnist", "random"), default="fashion-mnist")
    ap.add_argument("--image-train-steps", type=int, default=30, help="CFG training steps measured (≥ 2)")
    ap.add_argument("--image-samples", type=int, default=32, help="images sampled to measure images/s")
    ap.add_argument("--classifier-epochs", type=int, default=2, help="stage 1 before the feature fill (not timed)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    configure_threads()  # the CLI's choice: the cores other processes leave free
    device = resolve_device(args.device)
    demo = ExperimentConfig.from_dict(yaml.safe_load(preset_text("demo")))
    imbalanced = _demo_set(demo, args.data)
    counts = imbalanced.counts()
    n_fill = sum(max(counts) - n for n in counts)
    print(f"data: {imbalanced.source}, {len(imbalanced)} images {tuple(imbalanced.images.shape[1:])}, counts {counts}; "
          f"a fill up to the largest class adds N = {n_fill}; device {describe(device)}, threads as the CLI picks")
    with tempfile.TemporaryDirectory() as tmp:
        feature = _feature_fill(imbalanced, demo, args.classifier_epochs, device, Path(tmp) / "classifier")
        image = _image_fill(imbalanced, demo, args, n_fill, device, Path(tmp) / "generator")
    _print_table(feature, image, n_fill)


def _demo_set(demo: ExperimentConfig, data: str) -> ImageSet:
    """The demo's imbalanced training set (its validation split is not held out: it does not change the cost)."""
    if data == "fashion-mnist":
        train, _ = load_train_test(demo.data)
        return apply_profile(train, demo.imbalance)
    counts = [60 * (i + 1) for i in range(10)]  # the demo's linear profile, n_min 60
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(torch.tensor(counts))
    images = torch.randint(0, 256, (len(labels), 1, 28, 28), dtype=torch.uint8, generator=g)
    return ImageSet(images, labels, tuple(str(c) for c in range(10)), "random 1×28×28 [linear]")


def _feature_fill(data: ImageSet, demo: ExperimentConfig, epochs: int, device, folder: Path) -> dict:
    """The fill's summary (seconds measured by classify.feature_fill) and its sanity check."""
    fill = FeatureFillConfig()
    recipe = demo.train.replace(epochs=epochs, warmup_epochs=min(1.0, epochs / 4), head_retrain_epochs=1,
                                feature_fill=fill)
    clf = train_classifier(data, recipe, device=device, seed=0, checkpoint_dir=folder)
    summary = clf.feature_fill
    saved = load_file(str(folder / "feature-fill" / "features" / "features.safetensors"))
    real = clf.features(data.images)  # (N, D) unaugmented real features
    means = torch.stack([real[data.labels == c].mean(dim=0) for c in range(data.num_classes)])  # (K, D)
    nearest = torch.cdist(saved["features"].cpu(), means).argmin(dim=1)
    near_own = 100 * (nearest == saved["labels"].cpu()).float().mean().item()
    real_near_own = 100 * (torch.cdist(real, means).argmin(dim=1) == data.labels).float().mean().item()
    params = 0  # the feature model's size, rebuilt from its checkpoint
    for name, t in load_file(str(folder / "feature-fill" / "train" / "state.safetensors")).items():
        params += t.numel() if name.startswith("model.") and "feature_" not in name else 0
    return {"summary": summary, "config": fill, "near_own_pct": near_own, "real_near_own_pct": real_near_own,
            "params_m": params / 1e6,
            "feature_dim": real.shape[1]}


def _image_fill(data: ImageSet, demo: ExperimentConfig, args, n_fill: int, device, folder: Path) -> dict:
    """Measured seconds of a short CFG training and of sampling a few images, with their extrapolation."""
    cfg_method = next(m for m in demo.methods if m.rebalancer == "cfg")
    full = CFGTrainConfig.from_dict(cfg_method.params["train"])
    short = full.replace(train_steps=args.image_train_steps, checkpoint_every_steps=0)
    stamps = []
    real_loss = cfg_train.ddpm_loss

    def timed_loss(*a, **k):  # the time of each step's start, read from the loop's loss call
        stamps.append(time.perf_counter())
        return real_loss(*a, **k)

    cfg_train.ddpm_loss = timed_loss
    tic = time.perf_counter()
    cfg_train.train_generator(data, short, folder, device, progress=False)
    train_seconds = time.perf_counter() - tic
    cfg_train.ddpm_loss = real_loss
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    fixed = train_seconds - per_step * short.train_steps  # setup and the final save
    gen = load_generator(folder, device)
    sampler = build_sampler(gen.unet, gen.noise_schedule, cfg_method.params["sampler"],
                            cfg_method.params["num_inference_steps"], GUIDANCE_W, gen.image_size)
    labels = [k % data.num_classes for k in range(args.image_samples)]
    seeds = [derive_seed(0, c, k) for k, c in enumerate(labels)]
    sampler(labels[:2], seeds[:2])  # warm-up
    tic = time.perf_counter()
    sampler(labels, seeds)
    images_per_s = args.image_samples / (time.perf_counter() - tic)
    params = sum(p.numel() for p in gen.unet.parameters()) / 1e6
    return {"full_steps": full.train_steps, "measured_steps": short.train_steps, "per_step": per_step,
            "fixed": fixed, "train_est": fixed + per_step * full.train_steps, "images_per_s": images_per_s,
            "sample_est": n_fill / images_per_s, "sampled": args.image_samples, "params_m": params,
            "batch": full.batch_size, "sampler": f"{sampler.sampler}-{sampler.steps}"}


def _print_table(f: dict, i: dict, n_fill: int) -> None:
    s, cfg = f["summary"], f["config"]
    feature_total = s["extract_seconds"] + s["train_seconds"] + s["sample_seconds"]
    image_total = i["train_est"] + i["sample_est"]
    rows = [
        ("model", f"MLP {f['params_m']:.2f}M on D = {f['feature_dim']}", f"UNet {i['params_m']:.2f}M (tiny)"),
        ("train steps × batch", f"{cfg.train_steps} × {cfg.batch_size}", f"{i['full_steps']} × {i['batch']} "
         f"(measured {i['measured_steps']})"),
        ("s / train step", f"{s['train_seconds'] / cfg.train_steps:.4f}", f"{i['per_step']:.3f}"),
        ("extract s", f"{s['extract_seconds']:.1f} ({cfg.views} views)", "-"),
        ("train s", f"{s['train_seconds']:.1f}", f"{i['train_est']:.0f} (extrapolated)"),
        (f"sample N = {n_fill} s", f"{s['sample_seconds']:.1f} ({cfg.sampler}-{cfg.num_inference_steps})",
         f"{i['sample_est']:.0f} (extrapolated from {i['sampled']} at {i['images_per_s']:.2f} img/s, {i['sampler']})"),
        ("total s", f"{feature_total:.1f}", f"{image_total:.0f}"),
        ("near own class %", f"{f['near_own_pct']:.1f} (real features: {f['real_near_own_pct']:.1f})", "-"),
    ]
    print(f"\n{'':<22} {'feature fill (LDMLR)':<34} image fill (CFG, demo settings)")
    for name, a, b in rows:
        print(f"{name:<22} {a:<34} {b}")
    print(f"image fill / feature fill: {image_total / feature_total:.0f}x the seconds "
          f"({i['per_step'] / (s['train_seconds'] / cfg.train_steps):.0f}x per training step)")


if __name__ == "__main__":
    main()
