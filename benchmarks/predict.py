"""Images/s of a trained classifier's predictions: diffbalance's `TrainedClassifier.logits` against a naive loop.

    python benchmarks/predict.py [--images 10000] [--model small_cnn] [--image-size 28] [--repeats 3]

diffbalance: normalised batches in channels_last, on the CPU CPU_EVAL_BATCH images per forward pass (classify.train).
naive: the same network in eval mode under no_grad, NCHW batches of `eval_batch_size` (1,024), what every run did
before that choice. Both on random uint8 images, after one untimed pass; best of --repeats (timeit's rule). Prints
images/s side by side, the ratio, and the agreement (max |logit difference|, identical labels). Every classifier
run predicts the 10,000-image test set once, so on the CPU this is seconds per run of the demo.
"""

from __future__ import annotations

import argparse
import time

import torch

from diffbalance.classify.augment import normalize, stats_tensor
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import CPU_EVAL_BATCH, TrainedClassifier, train_classifier
from diffbalance.data.imageset import ImageSet


def naive_logits(clf: TrainedClassifier, images: torch.Tensor) -> torch.Tensor:
    mean, std = stats_tensor(clf.mean, clf.device), stats_tensor(clf.std, clf.device)
    model, step, out = clf.model.eval(), clf.config.eval_batch_size, []
    with torch.no_grad():
        for start in range(0, len(images), step):
            out.append(model(normalize(images[start : start + step], mean, std)))
    return torch.cat(out)


def best_seconds(fn, repeats: int) -> tuple[float, torch.Tensor]:
    fn()  # untimed: allocator and kernel choice
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    shape = (args.channels, args.image_size, args.image_size)
    train = ImageSet(torch.randint(0, 256, (256, *shape), dtype=torch.uint8, generator=g), torch.arange(256) % 10,
                     tuple(str(c) for c in range(10)), "benchmark")
    clf = train_classifier(train, TrainConfig(model=args.model, epochs=1), device="cpu", seed=0, progress=False)
    images = torch.randint(0, 256, (args.images, *shape), dtype=torch.uint8, generator=g)
    ours_s, ours = best_seconds(lambda: clf.logits(images), args.repeats)
    naive_s, naive = best_seconds(lambda: naive_logits(clf, images), args.repeats)
    print(f"{args.model}, {args.images:,} images {'×'.join(map(str, shape))}, cpu ({torch.get_num_threads()} threads), "
          f"best of {args.repeats}")
    print(f"{'path':<44}{'seconds':>9}{'img/s':>10}")
    print(f"{'diffbalance (channels_last, batch ' + str(CPU_EVAL_BATCH) + ')':<44}{ours_s:>9.2f}{args.images / ours_s:>10,.0f}")
    print(f"{'naive (NCHW, batch ' + str(clf.config.eval_batch_size) + ')':<44}{naive_s:>9.2f}{args.images / naive_s:>10,.0f}")
    same = bool((ours.argmax(1) == naive.argmax(1)).all())
    print(f"ratio {naive_s / ours_s:.2f}x; max |logit difference| {float((ours - naive).abs().max()):.2e}; "
          f"labels {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
