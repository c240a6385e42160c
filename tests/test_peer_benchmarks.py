"""What the peer benchmarks (benchmarks/fid.py --peers, benchmarks/oversample.py) and their speed-ups rely on:
oversampling's images are still exactly the per-image rule's, FID does not depend on the extraction batch, and the
Inception weights mapped into pytorch-fid's format compute diffbalance's features (slow tier: real weights)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.evaluate.fid import FidConfig, RandomConvFeatures, fid, load_inception
from diffbalance.evaluate.fid.features import KNOWN_TORCHSCRIPT, extraction_batch
from diffbalance.infra.seeding import derive_seed
from diffbalance.rebalance.registry import build_rebalancer
from diffbalance.rebalance.sources import class_pool, pick, picks

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / "shared" / "data" / "fid-inception" / KNOWN_TORCHSCRIPT


def _bench_fid():
    if str(ROOT / "benchmarks") not in sys.path:  # as when the script runs: its folder first on sys.path
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_fid", ROOT / "benchmarks" / "fid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # standard library only at import
    return module


# --- oversample: the same bytes as the per-image rule ----------------------------------------------------------------
def _reference(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Oversampling as the rule states it, image by image: image i of class c copies pool_c[randint(n_c)] drawn from a
    new generator seeded with derive_seed(seed, c, i); classes filled to the largest, in class order."""
    values, labels = np.unique(y, return_inverse=True)
    counts = np.bincount(labels)
    rows, new_labels = [], []
    for c, n in enumerate(counts):
        pool = np.flatnonzero(labels == c)
        for i in range(counts.max() - n):
            g = torch.Generator().manual_seed(derive_seed(seed, c, i))
            rows.append(pool[int(torch.randint(len(pool), (1,), generator=g))])
            new_labels.append(values[c])
    return np.concatenate([X, X[rows]]), np.concatenate([y, np.asarray(new_labels, dtype=y.dtype)])


def _imbalanced(layout: str = "NHWC", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    y = np.repeat(np.array([3, 0, 7]), [5, 9, 14])  # classes 0, 3, 7 (sorted values are the class indices)
    g.shuffle(y)
    X = g.integers(0, 256, (len(y), 6, 5, 3), dtype=np.uint8)  # N×H×W×C
    return (X.transpose(0, 3, 1, 2).copy() if layout == "NCHW" else X), y


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("seed", [0, 11])
def test_oversample_is_the_per_image_rule_byte_for_byte(layout, seed):
    X, y = _imbalanced(layout, seed)
    X_res, y_res = build_rebalancer("oversample", random_state=seed).fit_resample(X, y)
    X_ref, y_ref = _reference(X, y, seed)
    assert X_res.dtype == X.dtype and X_res.flags.c_contiguous and X_res.tobytes() == X_ref.tobytes()
    assert y_res.dtype == y.dtype and y_res.tobytes() == y_ref.tobytes()


def test_oversample_other_input_kinds_give_the_same_images():
    X, y = _imbalanced()
    X_ref, y_ref = _reference(X, y, 0)
    X_t, y_t = build_rebalancer("oversample").fit_resample(torch.from_numpy(X), torch.from_numpy(y))
    assert torch.equal(X_t, torch.from_numpy(X_ref)) and torch.equal(y_t, torch.from_numpy(y_ref))
    X_f, _ = build_rebalancer("oversample").fit_resample(X.astype(np.float32) / 255, y)  # floats in [0, 1]
    assert X_f.dtype == np.float32 and np.array_equal(np.rint(X_f * 255).astype(np.uint8), X_ref)
    X_g, y_l = build_rebalancer("oversample").fit_resample(X[..., 0], [f"c{v}" for v in y])  # N×H×W, list labels
    assert np.array_equal(X_g, X_ref[..., 0]) and y_l == [f"c{v}" for v in y_ref]
    assert X.tobytes() == _imbalanced()[0].tobytes()  # the input is never written to


def test_oversample_fill_batches_are_the_fit_resample_images():
    """The fill path (iter_batches → generate, batch by batch) and fit_resample's one gather pick the same images."""
    X, y = _imbalanced("NCHW")
    reb = build_rebalancer("oversample", batch_size=4)
    X_res, _ = reb.fit_resample(X, y)
    batches = list(reb.iter_batches({c: range(n) for c, n in reb.sampling_strategy_.items()}))
    assert np.array_equal(torch.cat([b[2] for b in batches]).numpy(), X_res[len(X):])
    assert all(r["source_indices"] == [int(s)] for b in batches for r, s in zip(b[3], reb.copy_sources(
        b[0], [r["seed"] for r in b[3]])))


def test_picks_reuse_one_generator_and_draw_what_a_fresh_one_draws():
    labels = torch.tensor([0] * 1 + [1] * 7 + [2] * 5000)
    seeds = [derive_seed(5, c, i) for c in range(3) for i in range(40)] + [0, 1, 2**32 + 3, 2**63 - 1]
    for c in range(3):
        pool = class_pool(labels, c)
        assert picks(pool, seeds).tolist() == [pick(pool, s) for s in seeds]
    assert picks(class_pool(labels, 1), []).tolist() == []


# --- FID: the extraction batch changes nothing ----------------------------------------------------------------------
def _sets(n: int = 300) -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(0)
    low = torch.rand(2 * n, 3, 8, 8, generator=g)
    x = (torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear") * 255).round().to(torch.uint8)
    x[n:] //= 2  # the second set darker: a FID well above round-off
    zeros = torch.zeros(n, dtype=torch.long)
    return ImageSet(x[:n], zeros, ("x",)), ImageSet(x[n:], zeros, ("x",))


def test_fid_is_identical_at_batch_50_and_256():
    a, b = _sets()
    scores = {bs: fid(a, b, FidConfig(features="random", batch_size=bs, cache=False), "cpu") for bs in (50, 256)}
    assert scores[50]["fid"] == scores[256]["fid"] > 1e-3
    assert (scores[50]["batch_size"], scores[256]["batch_size"]) == (50, 256)  # recorded with the score
    features = [RandomConvFeatures(dim=64, seed=3, batch_size=bs)(a.images) for bs in (50, 256)]
    assert torch.equal(*features)  # the features themselves, bit for bit


def test_auto_batch_is_resolved_where_the_device_is_known():
    assert FidConfig().batch_size is None
    assert extraction_batch(None, "cpu", cpu_batch=8) == 8 and extraction_batch(None, "cuda", cpu_batch=8) == 256
    assert extraction_batch(None, "cpu") == 256 and extraction_batch(32, "cuda", cpu_batch=8) == 32
    a, b = _sets(20)
    assert fid(a, b, FidConfig(features="random", cache=False), "cpu")["batch_size"] == 256


# --- the mapped weights (slow: the 87 MB TorchScript) ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} absent")
def test_pytorch_fid_mapping_gives_diffbalances_features(tmp_path):
    pytest.importorskip("pytorch_fid", reason="pytorch-fid not installed: pip install 'diffbalance[bench]'")
    bench = _bench_fid()
    state = bench.pytorch_fid_state_dict(WEIGHTS)
    net = bench.pytorch_fid_inception(state)  # strict load: every parameter mapped, nothing left over
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ours = load_inception(WEIGHTS, "cpu", batch_size=2)(images)  # (2, 2048)
    with torch.inference_mode():
        theirs = net(images.float() / 255)[0].flatten(1)  # pytorch-fid's input: [0, 1], it resizes and scales
    assert ours.shape == theirs.shape == (2, 2048)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)  # float round-off of two scalings, features ~1–6
    if importlib.util.find_spec("torch_fidelity") is not None:  # torch-fidelity loads the same file strictly
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        torch.save(state, tmp_path / "mapped.pth")
        loaded = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                             feature_extractor_weights_path=str(tmp_path / "mapped.pth")).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} absent")
def test_inception_fid_does_not_depend_on_the_batch():
    a, b = _sets(12)
    scores = [fid(a, b, FidConfig(weights_path=str(WEIGHTS), batch_size=bs, cache=False), "cpu") for bs in (None, 5)]
    assert scores[0]["batch_size"] == 8 and scores[1]["batch_size"] == 5  # auto on the CPU: 8
    assert scores[0]["fid"] == scores[1]["fid"]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 590, 5000, 1_000_003, 2**24 - 1, 2**26])
def test_first_draws_are_torchs_first_randint(n):
    """The vectorised first draw is what torch.randint(n) draws first from generator(seed), for every pool size it
    is used at (and beyond: up to 2²⁶); 63-bit seeds, whose high bits torch ignores, included."""
    from diffbalance.rebalance.sources import first_draws

    g = np.random.default_rng(n)
    seeds = [int(s) for s in g.integers(0, 2**63 - 1, 300, dtype=np.int64)] + [0, 1, 5489, 2**32, 2**63 - 1]
    theirs = [int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(s))) for s in seeds]
    assert (first_draws(seeds) % n).tolist() == theirs


def test_derive_seeds_are_derive_seed():
    from diffbalance.infra.seeding import derive_seeds

    assert derive_seeds((7, 3), [0, 1, 59, 10**6]) == [derive_seed(7, 3, i) for i in (0, 1, 59, 10**6)]
    assert derive_seeds((), [4, 5]) == [derive_seed(4), derive_seed(5)]
    assert derive_seeds(("a", 2), []) == []
