"""FID protocol, cache, weights resolution and the CLI, with the tiny random extractor (fast, CPU)."""

import json
import re
from pathlib import Path

import pytest
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.evaluate.fid import (
    DomainFeatures, FeatureCache, FidConfig, RandomConvFeatures, build_extractor, embed, fid, load_inception,
    quality_report,
)
from diffbalance.evaluate.fid import features as F

CLASSES = ("a", "b", "c", "d")


def _smooth_images(n, seed, channels=3, size=16):
    """Blurry random images (CIFAR-like smoothness), uint8 (n, C, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear") * 255).round().to(torch.uint8)


def _set(n, seed, **kw):
    return ImageSet(_smooth_images(n, seed, **kw), torch.arange(n) % 4, CLASSES, f"toy{seed}")


def _noisy(s: ImageSet, sigma: float, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    x = (s.images.float() + sigma * torch.randn(s.images.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
    return ImageSet(x, s.labels, s.class_names, "noisy")


CFG = FidConfig(features="random", cache=False, kid_subsets=10, kid_subset_size=50)


class Counting(RandomConvFeatures):
    calls = 0

    def __call__(self, images):
        Counting.calls += 1
        return super().__call__(images)


def test_fid_same_images_is_zero_and_records_provenance():
    s = _set(120, 0)
    r = fid(s, s, CFG, "cpu")
    assert abs(r["fid"]) < 1e-6
    for key in ("fid", "n_a", "n_b", "features", "resize", "weights_sha256", "feature_dtype", "seconds", "device"):
        assert key in r
    assert r["n_a"] == 120 and r["feature_dtype"] == "float32" and r["device"].startswith("cpu")


def test_fid_grows_with_noise():
    s = _set(200, 1)
    fids = [fid(s, _noisy(s, sigma), CFG, "cpu")["fid"] for sigma in (0, 10, 40, 80)]
    assert fids[0] < 1e-6 and fids[1] < fids[2] < fids[3]


def test_extractors_leave_the_global_rng_alone(tmp_path):
    torch.save(F._Pool3Net().state_dict(), tmp_path / "w.pth")
    state = torch.random.get_rng_state()
    first = RandomConvFeatures(seed=3)
    load_inception(tmp_path / "w.pth", "cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # layer init ran on a forked, seeded RNG
    assert RandomConvFeatures(seed=3).checksum == first.checksum


def test_grayscale_is_repeated_to_rgb():
    gray = _smooth_images(10, 2, channels=1)
    ext = RandomConvFeatures()
    torch.testing.assert_close(ext(gray), ext(gray.expand(-1, 3, -1, -1).contiguous()))


def test_cache_hit_returns_identical_stats_and_skips_extractor(tmp_path):
    images, ext, cache = _smooth_images(50, 3), Counting(), FeatureCache(tmp_path)
    Counting.calls = 0
    first = embed(images, ext, cache, need_features=True)
    calls = Counting.calls
    second = embed(images, ext, cache, need_features=True)
    assert Counting.calls == calls and second.cache_hit and not first.cache_hit
    assert (first.stats.mu == second.stats.mu).all() and (first.stats.sigma == second.stats.sigma).all()
    torch.testing.assert_close(first.features, second.features)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_cache_key_depends_on_images_and_extractor(tmp_path):
    cache, images = FeatureCache(tmp_path), _smooth_images(20, 4)
    embed(images, RandomConvFeatures(seed=0), cache)
    embed(images, RandomConvFeatures(seed=1), cache)
    embed(_smooth_images(20, 5), RandomConvFeatures(seed=0), cache)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_corrupt_cache_file_is_recomputed(tmp_path):
    images, ext, cache = _smooth_images(30, 6), RandomConvFeatures(), FeatureCache(tmp_path)
    good = embed(images, ext, cache)
    (path,) = tmp_path.glob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    again = embed(images, ext, cache)
    assert not again.cache_hit and (again.stats.mu == good.stats.mu).all()
    assert embed(images, ext, cache).cache_hit  # rewritten


def test_stats_only_entry_is_upgraded_when_features_are_needed(tmp_path):
    images, ext, cache = _smooth_images(30, 7), RandomConvFeatures(), FeatureCache(tmp_path)
    embed(images, ext, cache)
    e = embed(images, ext, cache, need_features=True)
    assert not e.cache_hit and e.features.shape == (30, ext.dim)


def test_cache_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "c"))
    s = _set(20, 8)
    fid(s, s, FidConfig(features="random"), device="cpu")
    assert len(list((tmp_path / "c" / "fid").glob("*.safetensors"))) == 1  # the same images embedded once


def test_quality_report_on_generated_classes_only():
    original = _set(200, 9)
    gen_idx = [i for i in range(200) if i % 4 in (0, 2)][:60]
    generated = ImageSet(_noisy(original, 30).images[gen_idx], original.labels[gen_idx], CLASSES, "gen")
    rebalanced = original.subset(list(range(100))).concat(generated)
    r = quality_report(original, rebalanced, generated, CFG, "cpu")
    assert r["generated_fid"]["classes"] == ["a", "c"] and r["generated_fid"]["n_a"] == 100
    assert set(r["per_class_fid"]) == {"a", "c"} and r["per_class_fid"]["a"]["n_fake"] == 30
    assert r["protocol_fid"]["n_b"] == 160 and r["protocol_fid"]["fid"] > 0
    assert 0 <= r["precision_recall"]["precision"] <= 1 and r["precision_recall"]["k"] == 3
    assert r["kid"]["kid_std"] is not None and r["kid"]["subset_size"] == 50
    for key in ("resize", "weights_sha256", "feature_dtype", "device", "seconds"):
        assert key in r
    assert quality_report(original, rebalanced, generated, CFG, torch.device("cpu"))["kid"] == r["kid"]  # seeded
    assert "device" not in r["config"]  # the device is an argument, not part of the config


def test_domain_features_are_labelled():
    class Clf:
        def features(self, images):
            return images.float().mean(dim=(2, 3))

    s = _set(40, 10)
    r = fid(s, _noisy(s, 20), FidConfig(features="domain", cache=False), "cpu", domain_model=Clf())
    assert r["features"].startswith("domain-FID (not Inception FID)") and r["score"] == "domain-FID (not Inception FID)"
    assert r["weights_sha256"] == ""  # no weights to hash: nothing is cached
    with pytest.raises(DiffbalanceError, match="domain"):
        fid(s, s, FidConfig(features="domain"), "cpu")
    assert DomainFeatures(Clf()).dim == -1


def test_config_from_dict_rejects_unknown_keys():
    assert FidConfig.from_dict({"features": "random", "seed": 3}).seed == 3
    for unknown in ({"featurs": "random"}, {"device": "cpu"}):  # the device is passed in, not configured
        with pytest.raises(DiffbalanceError) as err:
            FidConfig.from_dict(unknown, path="fid")
        message = str(err.value)
        key = next(iter(unknown))
        assert re.search(r"\bfid\b", message) and re.search(rf"\b{key}\b", message) and "\n" not in message
        assert "features" in message.split("fix:")[1]  # the fix lists the real options
    with pytest.raises(DiffbalanceError, match="resize"):
        FidConfig(resize="pil")
    assert FidConfig.from_dict(FidConfig().to_dict()) == FidConfig()


@pytest.mark.parametrize("key, value", [
    ("features", "clip"), ("resize", "pil"), ("batch_size", 0), ("kid_subset_size", -1), ("max_images_pr", 0),
    ("pr_k", "3"), ("cache", "yes"), ("weights_path", 3),
])
def test_config_errors_name_the_key_path(key, value):
    with pytest.raises(DiffbalanceError) as err:
        FidConfig.from_dict({key: value}, path="fid")
    message = str(err.value)
    assert re.search(rf"(^|\s)fid\.{key}\b", message) and repr(value) in message and "\n" not in message


def test_device_is_an_argument_resolved_once():
    s = _set(20, 14)
    by_name = fid(s, s, CFG, "cpu")
    by_device = fid(s, s, CFG, torch.device("cpu"))
    assert by_name["device"] == by_device["device"] and by_name["fid"] == by_device["fid"]
    assert build_extractor(CFG, "cpu").device == torch.device("cpu")
    with pytest.raises(DiffbalanceError, match="unknown device"):
        fid(s, s, CFG, "tpu:0")


def _offline(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFBALANCE_FID_WEIGHTS", raising=False)
    monkeypatch.delenv("DIFFBALANCE_SHARED", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)


def test_offline_without_weights_says_how_to_provide_them(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(DiffbalanceError) as err:
        load_inception()
    assert "--fid-weights" in str(err.value) and "DIFFBALANCE_FID_WEIGHTS" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(DiffbalanceError, match="downloads are off"):
        load_inception(allow_download=False)


def test_missing_explicit_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFBALANCE_FID_WEIGHTS", str(tmp_path / "nope.pt"))
    with pytest.raises(DiffbalanceError, match="DIFFBALANCE_FID_WEIGHTS"):
        load_inception()


def test_torchscript_outside_explicit_path_needs_known_checksum(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    shared = tmp_path / "shared" / "data" / "fid-inception"
    shared.mkdir(parents=True)
    torch.jit.script(torch.nn.Identity()).save(str(shared / F.KNOWN_TORCHSCRIPT))
    monkeypatch.setenv("DIFFBALANCE_SHARED", str(tmp_path / "shared"))
    with pytest.raises(DiffbalanceError, match="sha256"):
        load_inception()


def test_explicit_torchscript_records_its_checksum(tmp_path):
    class Pool(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, 4)

    path = tmp_path / "tiny.pt"
    torch.jit.script(Pool()).save(str(path))
    ext = load_inception(path, "cpu", batch_size=3)
    assert ext.checksum == F.sha256_file(path) and ext.resize == "bilinear-torch"
    out = ext(_smooth_images(5, 11, channels=1))
    assert out.shape == (5, 12) and out.dtype == torch.float32 and out.abs().max() <= 1


def test_every_fid_device_argument_takes_auto(tmp_path):
    """"auto" (the default) wherever evaluate.fid takes a device, resolved by infra.device: the CPU without a GPU."""
    from types import SimpleNamespace

    from diffbalance.evaluate.fid.embedder import Embedder
    from diffbalance.infra.device import resolve_device

    class Pool(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    here = resolve_device("auto")
    path = tmp_path / "tiny.pt"
    torch.jit.script(Pool()).save(str(path))
    for ext in (load_inception(path, device="auto"), load_inception(path)):
        assert ext.device == here and ext.batch_size == (F.INCEPTION_CPU_BATCH if here.type == "cpu" else 256)
        assert ext(_smooth_images(3, 4)).shape == (3, 3)
    for ext in (RandomConvFeatures(device="auto"), RandomConvFeatures()):
        assert ext.device == here and ext(_smooth_images(3, 4)).shape == (3, 32)
    assert F.extraction_batch(None, "auto", cpu_batch=5) == (5 if here.type == "cpu" else F.DEFAULT_BATCH)
    assert Embedder(SimpleNamespace(), stats_device="auto").stats_device == here
    assert Embedder(SimpleNamespace()).stats_device == here  # an extractor without a device of its own


def test_state_dict_weights_load_with_weights_only(tmp_path):
    torch.manual_seed(0)
    net = F._Pool3Net()
    state = {**net.state_dict(), "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    torch.save(state, tmp_path / "pt_inception.pth")
    ext = load_inception(tmp_path / "pt_inception.pth", "cpu", resize="bilinear-tf1x")
    x = _smooth_images(2, 12, size=32)
    expected = net.eval()(F.resize_299(x.float(), "bilinear-tf1x") / 127.5 - 1)
    torch.testing.assert_close(ext(x), expected)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(DiffbalanceError, match="not an FID Inception"):
        load_inception(tmp_path / "other.pth")


def _write_folder(root: Path, s: ImageSet):
    from torchvision.io import write_png

    for i, (im, y) in enumerate(zip(s.images, s.labels)):
        (root / s.class_names[y]).mkdir(parents=True, exist_ok=True)
        write_png(im, str(root / s.class_names[y] / f"{i:04d}.png"))


def _argv(*args):
    """`fid ARGS`; Typer drops the subcommand name while `fid` is the only command registered."""
    from diffbalance.cli.main import app

    return ["fid", *args] if len(app.registered_commands) > 1 else list(args)


def test_folder_specs_use_the_one_image_reader(tmp_path):
    from PIL import Image

    from diffbalance.data.image_folder import load_image_folder
    from diffbalance.experiment.image_sets import load_image_set

    s = _set(8, 15)
    _write_folder(tmp_path / "A", s)
    Image.fromarray(s.images[0, 0].numpy()).save(tmp_path / "A" / "a" / "grey.gif")  # grey, and a GIF
    data = load_image_set(str(tmp_path / "A"))
    assert len(data) == 9 and data.images.shape[1:] == (3, 16, 16)  # every image as it is; grey → RGB
    assert torch.equal(data.images, load_image_folder(tmp_path / "A").images)


def test_cli_on_folders_writes_json(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from diffbalance.cli.main import app

    s = _set(24, 13)
    _write_folder(tmp_path / "A", s)
    _write_folder(tmp_path / "B", _noisy(s, 30))
    out = tmp_path / "fid.json"
    res = CliRunner().invoke(app, _argv(str(tmp_path / "A"), str(tmp_path / "B"), "--features", "random",
                                        "--device", "cpu", "--no-cache", "--json", str(out)))
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["n_a"] == 24 and r["fid"] > 0 and r["config"]["features"] == "random"
    assert "FID (random features)" in res.output


def test_cli_batch_size_is_the_librarys_auto_unless_given(tmp_path):
    """No --batch-size: FidConfig's auto batch (Inception on the CPU: 8 images, not 256 — 5.6 GB peak memory there);
    an explicit integer is still taken."""
    from typer.testing import CliRunner

    from diffbalance.cli.main import app

    class Pool(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    weights = tmp_path / "tiny.pt"
    torch.jit.script(Pool()).save(str(weights))
    s = _set(12, 13)
    _write_folder(tmp_path / "A", s)
    for given, used in ((None, F.INCEPTION_CPU_BATCH), (5, 5)):
        out = tmp_path / f"fid-{given}.json"
        res = CliRunner().invoke(app, _argv(str(tmp_path / "A"), str(tmp_path / "A"), "--weights", str(weights),
                                            "--device", "cpu", "--no-cache", "--json", str(out),
                                            *(["--batch-size", str(given)] if given else [])))
        assert res.exit_code == 0, res.output
        r = json.loads(out.read_text())
        assert r["config"]["batch_size"] == given and r["batch_size"] == used


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    from diffbalance.cli.main import main

    with pytest.raises(SystemExit) as code:
        main(_argv(str(tmp_path / "missing"), str(tmp_path), "--features", "random"))
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.startswith("error:") and "neither an image folder" in err
    assert err.strip().count("\n") == 0


# --- each image through the network once --------------------------------------------------------------------------


class ImageCounting(RandomConvFeatures):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.images_seen = 0

    def __call__(self, images):
        self.images_seen += len(images)
        return super().__call__(images)


def test_a_run_embeds_each_image_once():
    from diffbalance.evaluate.fid import fid_embedder

    original = _set(80, 16)
    real = original.subset(list(range(0, 80, 3)))  # the imbalanced real part: images of the original set
    fills = {name: ImageSet(_smooth_images(12, seed), torch.tensor([1, 3] * 6), CLASSES, name)
             for name, seed in (("m1", 17), ("m2", 18))}
    ext = ImageCounting()
    emb = fid_embedder(CFG, "cpu", extractor=ext)
    for fill in fills.values():
        quality_report(original, (real, fill), fill, CFG, "cpu", embedder=emb)
        quality_report(original, real.concat(fill), fill, CFG, "cpu", embedder=emb)  # concatenated: no new images
    assert ext.images_seen == 80 + 12 + 12


def test_rebalanced_as_parts_equals_the_concatenated_set():
    from diffbalance.evaluate.fid import fid_embedder

    original = _set(90, 19)
    real, fill = original.subset(list(range(40))), _noisy(_set(30, 20), 25)
    emb = fid_embedder(CFG, "cpu")  # the same features both ways: only the combination of statistics differs
    as_parts = quality_report(original, (real, fill), fill, CFG, "cpu", embedder=emb)
    whole = quality_report(original, real.concat(fill), fill, CFG, "cpu", embedder=emb)
    assert as_parts["protocol_fid"]["fid"] == pytest.approx(whole["protocol_fid"]["fid"], rel=1e-9)
    assert as_parts["protocol_fid"]["n_b"] == whole["protocol_fid"]["n_b"] == 70
    one = fill.subset([0])  # a one-image part has no Σ of its own
    tiny = quality_report(original, (real, one), fill, CFG, "cpu", embedder=emb)
    expected = fid(original, real.concat(one), CFG, "cpu", embedder=emb)["fid"]
    assert tiny["protocol_fid"]["fid"] == pytest.approx(expected, rel=1e-9)


def test_features_do_not_depend_on_the_batch_size():
    images = _smooth_images(23, 21)
    torch.testing.assert_close(RandomConvFeatures(batch_size=4)(images), RandomConvFeatures(batch_size=64)(images))


def test_the_loaded_network_is_reused_until_the_file_changes(tmp_path):
    import os

    path = tmp_path / "w.pth"
    torch.save(F._Pool3Net().state_dict(), path)
    a, b = load_inception(path, "cpu"), load_inception(path, "cpu", batch_size=8)
    assert a.net is b.net and b.batch_size == 8 and a.checksum == b.checksum
    os.utime(path, ns=(1, 1))  # a replaced file (new mtime) is loaded again
    assert load_inception(path, "cpu").net is not a.net
