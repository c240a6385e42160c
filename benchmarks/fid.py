"""FID speed, two modes.

Default — feature extraction: ours (uint8 batches to the device, resize there, `--batch` images per pass) vs a
naive reference measured in the same run (PIL bilinear resize of each image to 299 and a per-image ToTensor on
the CPU, then the same network on the same device), with the largest feature difference between the two.
Optionally the FID of N CIFAR-10 train vs N test images (`--n-fid`).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fid.py --device cpu --n 24            # ~1 min on 2 cores
    python benchmarks/fid.py --device cuda --n 20480 --batch 256 --json fid-speed.json   # target ≥ 5,000 img/s (H100)

--peers — the tools users compare us with, in the same run: the FID of N CIFAR-10 train vs N test images (written
once as PNG folders) by diffbalance (`diffbalance fid A B`'s library call, at both of its resize modes),
pytorch-fid, torch-fidelity and clean-fid, each in its own fresh process (peak RSS per job, read inside it;
no job has DataLoader workers, so nothing escapes that count): the value, images/s (both
sets, files read and model loaded included) and peak memory side by side, with the ratios to diffbalance.

    .venv/bin/python benchmarks/fid.py --peers --n-peers 500 --json fid-peers.json      # ~15 min on 2 cores

Offline, every peer gets the same Inception weights, mapped into its own format (../shared/data/fid-inception/
PROVENANCE.md): pytorch-fid and torch-fidelity a pytorch-fid-layout state dict (`pytorch_fid_state_dict`),
clean-fid the TorchScript itself as its feature model. Each keeps its own preprocessing, so the values differ by
resize: pytorch-fid resizes as diffbalance's default (bilinear, F.interpolate: the same value), torch-fidelity as
TF1 (diffbalance's bilinear-tf1x; it scales (x - 128)/128 where we scale x/127.5 - 1, so ~0.01 apart), clean-fid with
its own "clean" PIL bicubic resize (another value).
Peers missing from the environment are skipped with one line (pip install 'diffbalance[bench]').

The Inception weights are found as every FID run finds them (--weights, $DIFFBALANCE_FID_WEIGHTS,
../shared/data/fid-inception, $DIFFBALANCE_SHARED); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

from peak_memory import rss_gb  # benchmarks/peak_memory.py (this script's folder is on sys.path)

# Only the standard library at the top: each --peers job is a fresh spawned process that imports this file, and
# must pay for its own tool's imports only.

def pytorch_fid_state_dict(torchscript: str | Path) -> dict:
    """The FID TorchScript's weights as a state dict of pytorch-fid's `InceptionV3([3], use_fid_inception=True)`
    network before its blocks are regrouped (diffbalance.evaluate.fid.mapping; torchvision names, which
    torch-fidelity's FeatureExtractorInceptionV3 uses too), with a zero 1008-way `fc` placeholder (FID does not use
    it)."""
    import torch

    from diffbalance.evaluate.fid.mapping import torchscript_state_dict

    return torchscript_state_dict(torchscript) | {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}


def pytorch_fid_inception(state: dict):
    """pytorch-fid's FID InceptionV3 (pool3 block), eval mode, with `state` instead of its download."""
    from pytorch_fid import inception

    fetch = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = lambda *args, **kwargs: state  # never a download
    try:
        return inception.InceptionV3([3], use_fid_inception=True).eval()
    finally:
        inception.load_state_dict_from_url = fetch


# --- one job per fresh process -------------------------------------------------------------------------------------
def _done(value: float, start: float, floor_gb: float, n_images: int, **info) -> dict:
    import torch

    seconds = time.perf_counter() - start
    return {"fid": float(value), "seconds": seconds, "images_per_s": n_images / seconds, "peak_rss_gb": rss_gb(),
            "imports_rss_gb": floor_gb, "threads": torch.get_num_threads(), **info}


def job_diffbalance(a: str, b: str, n_images: int, weights: str, resize: str, batch: int | None) -> dict:
    """`diffbalance fid A B` without the shell: read both class folders, embed, FID (no cache, so it is measured)."""
    from diffbalance.evaluate.fid import FidConfig
    from diffbalance.experiment.image_sets import compare_image_sets

    floor, start = rss_gb(), time.perf_counter()
    cfg = FidConfig(weights_path=weights, resize=resize, batch_size=batch, cache=False, allow_download=False)
    r = compare_image_sets(a, b, cfg, "cpu")
    return _done(r["fid"], start, floor, n_images, batch=r.get("batch_size", batch), resize=r["resize"])


def job_pytorch_fid(a: str, b: str, n_images: int, weights: str, batch: int) -> dict:
    import torch
    from pytorch_fid import fid_score, inception

    floor, start = rss_gb(), time.perf_counter()
    fetch = inception.load_state_dict_from_url  # the model is built inside the call: hand it the mapped weights
    inception.load_state_dict_from_url = lambda *args, **kwargs: torch.load(weights, weights_only=True)
    try:  # num_workers=0: PNGs decoded in this process (its CLI would start workers, outside this RSS)
        value = fid_score.calculate_fid_given_paths([a, b], batch, "cpu", 2048, num_workers=0)
    finally:
        inception.load_state_dict_from_url = fetch
    return _done(value, start, floor, n_images, batch=batch, resize="bilinear (F.interpolate, as bilinear-torch)")


def job_torch_fidelity(a: str, b: str, n_images: int, weights: str, batch: int) -> dict:
    import torch_fidelity

    floor, start = rss_gb(), time.perf_counter()
    r = torch_fidelity.calculate_metrics(input1=a, input2=b, fid=True, cuda=False, batch_size=batch, cache=False,
                                         verbose=False, feature_extractor_weights_path=weights,
                                         save_cpu_ram=True)  # save_cpu_ram: no DataLoader workers
    return _done(r["frechet_inception_distance"], start, floor, n_images, batch=batch,
                 resize="bilinear TF1 (as bilinear-tf1x), (x-128)/128")


def job_clean_fid(a: str, b: str, n_images: int, torchscript: str, batch: int) -> dict:
    import torch
    from cleanfid import fid as cleanfid

    floor, start = rss_gb(), time.perf_counter()
    net = torch.jit.load(torchscript, map_location="cpu").eval()

    def features(x: torch.Tensor) -> torch.Tensor:  # clean-fid's own scaling of its 299×299 [0, 255] images
        return net((x - 128) / 128)  # (B, 2048)

    value = cleanfid.compute_fid(a, b, mode="clean", custom_feat_extractor=features, batch_size=batch,
                                 num_workers=0, device=torch.device("cpu"), verbose=False, use_dataparallel=False)
    return _done(value, start, floor, n_images, batch=batch, resize="clean: PIL bicubic, its own (another value)")


def in_fresh_process(job, *args) -> dict:
    """job(*args) in a new spawned interpreter (not forked: no parent memory), so its peak RSS is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(job, args)


# --- --peers ------------------------------------------------------------------------------------------------------
PEERS = (("pytorch-fid", "pytorch_fid", 50), ("torch-fidelity", "torch_fidelity", 64), ("clean-fid", "cleanfid", 32))


def write_png_folders(root: Path, n: int, cifar_root: str | None) -> tuple[Path, Path]:
    """N seeded-random CIFAR-10 train and test images as root/{train,test}/all/NNNNN.png: diffbalance reads the
    class folder root/train, the peers the flat folder root/train/all."""
    from PIL import Image

    out = []
    for split in ("train", "test"):
        folder = root / split / "all"
        folder.mkdir(parents=True)
        for k, im in enumerate(cifar_images(n, split, 0, cifar_root)):
            Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{k:05d}.png")
        out.append(root / split)
    return out[0], out[1]


def peers(args: argparse.Namespace) -> None:
    from importlib.metadata import version

    import torch

    from diffbalance.evaluate.fid.features import resolve_inception_weights

    weights, _ = resolve_inception_weights(args.weights)
    if weights is None:
        sys.exit("benchmarks/fid.py --peers needs the FID TorchScript (../shared/data/fid-inception): pass --weights")
    n_images = 2 * args.n_peers
    with tempfile.TemporaryDirectory(prefix="fid-peers-") as tmp:
        a, b = write_png_folders(Path(tmp), args.n_peers, args.cifar_root)
        mapped = Path(tmp) / "pt_inception-mapped-from-torchscript.pth"
        torch.save(pytorch_fid_state_dict(weights), mapped)
        rows = [("diffbalance", resize, in_fresh_process(job_diffbalance, str(a), str(b), n_images, str(weights),
                                                         resize, args.batch))
                for resize in ("bilinear-torch", "bilinear-tf1x")]  # the second: torch-fidelity's resize
        jobs = {"pytorch-fid": (job_pytorch_fid, str(mapped)), "torch-fidelity": (job_torch_fidelity, str(mapped)),
                "clean-fid": (job_clean_fid, str(weights))}
        for name, module, batch in PEERS:
            if name not in args.tools.split(","):
                continue
            if importlib.util.find_spec(module) is None:
                print(f"{name} not installed: pip install 'diffbalance[bench]'", flush=True)
                continue
            job, w = jobs[name]
            rows.append((f"{name} {version(name)}", "", in_fresh_process(job, str(a / "all"), str(b / "all"),
                                                                           n_images, w, batch)))
    report_peers(rows, args)


def report_peers(rows: list[tuple[str, str, dict]], args: argparse.Namespace) -> None:
    ours = rows[0][2]
    print(f"\nFID of {args.n_peers} CIFAR-10 train vs {args.n_peers} test images (PNG folders), CPU, "
          f"{ours['threads']} threads; each job a fresh process; images/s over both sets, reading included")
    print(f"{'tool':<22} {'resize':<46} {'batch':>5} {'FID':>10} {'seconds':>8} {'images/s':>8} {'peak GB':>8} "
          f"{'imports GB':>10}")
    for tool, mode, r in rows:
        resize = mode or r["resize"]
        print(f"{tool:<22} {resize:<46} {r['batch']:>5} {r['fid']:>10.4f} {r['seconds']:>8.1f} "
              f"{r['images_per_s']:>8.2f} {r['peak_rss_gb']:>8.2f} {r['imports_rss_gb']:>10.2f}")
    like = {"pytorch-fid": "bilinear-torch", "torch-fidelity": "bilinear-tf1x"}
    print("diffbalance vs each peer (speed: its images/s over theirs; memory: its peak RSS over theirs; "
          "value: |FID difference| against diffbalance at the peer's resize)")
    ours_at = {mode: r for tool, mode, r in rows if tool == "diffbalance"}
    for tool, _, r in rows[2:]:
        name = tool.split()[0]
        mine = ours_at.get(like.get(name, "bilinear-torch"))
        value = f"|ΔFID| {abs(mine['fid'] - r['fid']):.2g}" if name in like else \
            f"FID {r['fid']:.4f} vs ours {mine['fid']:.4f} (another resize)"
        if name == "torch-fidelity":  # the same resize; the input scaling differs by up to 0.8 %
            value += " (it scales (x - 128)/128, diffbalance and pytorch-fid x/127.5 - 1)"
        print(f"  {tool:<22} speed {ours['images_per_s'] / r['images_per_s']:.2f}x   memory "
              f"{ours['peak_rss_gb'] / r['peak_rss_gb']:.2f}x   {value}")
    if args.json:
        args.json.write_text(json.dumps({"n_per_set": args.n_peers, "rows": [
            {"tool": tool, "mode": mode, **r} for tool, mode, r in rows]}, indent=1) + "\n")


# --- the default mode: feature extraction speed ---------------------------------------------------------------------
def random_images(n: int, seed: int = 0):
    """n smooth random uint8 images (n, 3, 32, 32), CIFAR-sized (speed does not depend on the content)."""
    import torch

    from diffbalance.infra.seeding import generator

    low = torch.rand(n, 3, 8, 8, generator=generator(seed))
    return (torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear") * 255).round().to(torch.uint8)


def cifar_images(n: int, split: str = "train", seed: int = 1, root: str | None = None):
    """n seeded-random CIFAR-10 images of `split` (found the usual way; no download)."""
    import torch

    from diffbalance.data.sources import DataConfig, load_train_test
    from diffbalance.infra.seeding import generator

    train, test = load_train_test(DataConfig(name="cifar10", root=root, download=False))
    data = train if split == "train" else test
    pick = torch.randperm(len(data), generator=generator(seed))[:n].sort().values
    return data.images[pick]


def naive_features(net, images, batch_size: int, device):
    """The reference many scripts use: per image, PIL bilinear resize to 299 and ToTensor on the CPU; then the
    batch goes to the device and through the network."""
    import torch
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    from diffbalance.evaluate.fid.features import conv_settings

    out = []
    for i in range(0, len(images), batch_size):
        batch = [to_tensor(Image.fromarray(im.permute(1, 2, 0).numpy()).resize((299, 299), Image.BILINEAR))
                 for im in images[i : i + batch_size]]  # each (3, 299, 299) in [0, 1]
        x = torch.stack(batch).to(device) * 2 - 1  # (B, 3, 299, 299) in [-1, 1]
        with torch.inference_mode(), conv_settings(device):
            out.append(net(x).float().cpu())
    return torch.cat(out)


def timed(fn, device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def speed(args: argparse.Namespace) -> None:
    import torch

    from diffbalance.evaluate.fid import FidConfig, fid, load_inception
    from diffbalance.evaluate.fid.features import WEIGHTS_ENV
    from diffbalance.infra.device import describe, resolve_device
    from diffbalance.infra.errors import DiffbalanceError

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
        ref, t = timed(lambda: naive_features(ext.net, images[:n_naive], ext.batch_size, device), device)
        t_naive = min(t_naive, t)

    result = {
        "device": describe(device), "batch": ext.batch_size, "rounds": args.rounds, "images": args.images,
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
    print(f"device: {result['device']}   batch {ext.batch_size}   conv math {ext.conv_math}   images {args.images}   "
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
        cfg = FidConfig(weights_path=ext.weights_path, batch_size=ext.batch_size, cache=False)
        r = fid(a, b, cfg, device, extractor=ext)
        result["fid_train_vs_test"] = {k: r[k] for k in ("fid", "n_a", "n_b", "resize", "batch_size", "seconds")}
        print(json.dumps(result["fid_train_vs_test"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", action="store_true", help="FID by diffbalance vs pytorch-fid, torch-fidelity, clean-fid")
    p.add_argument("--n-peers", type=int, default=500, help="--peers: CIFAR-10 images per set (train vs test)")
    p.add_argument("--tools", default=",".join(name for name, _, _ in PEERS),
                   help="--peers: the peers to run beside diffbalance, comma-separated (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (--peers: always the CPU)")
    p.add_argument("--batch", "--batch-size", dest="batch", type=int, default=None,
                   help="diffbalance's images per forward pass (default: auto, 256 on CUDA and 8 on the CPU)")
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
    (peers if args.peers else speed)(args)


if __name__ == "__main__":
    main()
