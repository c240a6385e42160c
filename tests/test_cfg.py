"""Fast CPU tests of Method 1 (CFG): guidance maths, samplers, training/checkpoints/resume, the rebalancer."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import UNet2DModel

from diffbalance.data.imageset import ImageSet
from diffbalance.errors import DiffbalanceError
from diffbalance.generate.cfg import train as train_module
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.guidance import guide, guided_epsilon, ho_weight
from diffbalance.generate.cfg.sampling import sample
from diffbalance.generate.cfg.train import train_generator
from diffbalance.generate.cfg.unet import build_unet, crop_images, null_class, pad_images
from diffbalance.rebalance.base import build_rebalancer
from diffbalance.rebalance.store import fill, read_manifest

CPU = torch.device("cpu")
TINY = dict(block_out_channels=(8, 16), num_train_timesteps=8, batch_size=8, checkpoint_every_steps=2, train_steps=4)


def toy_set(num_classes=3, size=8, channels=1, n=24) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % num_classes, tuple(f"c{i}" for i in range(num_classes)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    data = toy_set()
    return data, train_generator(data, CFGTrainConfig(**TINY), out, CPU, progress=False), out


def tiny_unet(num_classes=3, size=8) -> UNet2DModel:
    torch.manual_seed(0)
    return build_unet("tiny", num_classes, 1, (size, size), block_out_channels=(8, 16)).eval()


SCHEDULE = CFGTrainConfig(num_train_timesteps=6).noise_schedule()


# --- guidance (paper eq. 8) --------------------------------------------------------------------
def test_guidance_on_hand_values():
    cond, uncond = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    # (1 + w)·ε_c − w·ε_u with w = 2: 3·[1, 2] − 2·[0.5, −1] = [2, 8]
    assert torch.equal(guide(cond, uncond, 2.0), torch.tensor([2.0, 8.0]))
    assert torch.equal(guide(cond, uncond, 0.0), cond)  # w = 0: the conditional prediction


def test_sd_convention_equals_ho_with_w_minus_one():
    cond, uncond = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    assert torch.allclose(guide(cond, uncond, 7.5, "sd"), guide(cond, uncond, 6.5, "ho"))
    assert ho_weight(1.0, "sd") == 0.0
    with pytest.raises(DiffbalanceError):
        ho_weight(1.0, "cfg++")


def test_guided_epsilon_is_one_batched_forward():
    unet = tiny_unet()
    calls = []
    unet.register_forward_hook(lambda mod, args, kwargs_out: calls.append(args[0].shape[0]))
    x, labels = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    with torch.no_grad():
        eps = guided_epsilon(unet, x, torch.tensor(5), labels, null_class(unet), 2.0)
        eps_c = unet(x, 5, class_labels=labels).sample
        eps_u = unet(x, 5, class_labels=torch.full_like(labels, null_class(unet))).sample
    assert calls[0] == 6  # one forward of the conditional and null halves together
    assert torch.allclose(eps, 3 * eps_c - 2 * eps_u, atol=1e-5)


def test_null_class_is_the_last_embedding():
    unet = tiny_unet(num_classes=5)
    assert unet.config.num_class_embeds == 6 and null_class(unet) == 5


def test_pad_and_crop_round_trip():
    x = torch.randn(2, 1, 28, 28)
    padded = pad_images(x, (32, 32))
    assert padded.shape[-2:] == (32, 32) and torch.equal(crop_images(padded, (28, 28)), x)


# --- samplers --------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 3), ("dpmpp", 3), ("dpmpp-sde", 3)])
def test_same_seed_same_image_at_any_batch_size(sampler, steps):
    unet = tiny_unet()
    seeds, labels = [11, 22, 33, 44], [0, 1, 2, 1]
    kw = dict(noise_schedule=SCHEDULE)
    batch = sample(unet, sampler, labels, seeds, 1.5, steps, null_class(unet), **kw)
    singles = torch.cat([sample(unet, sampler, [c], [s], 1.5, steps, null_class(unet), **kw) for c, s in zip(labels, seeds)])
    assert batch.dtype == torch.uint8 and batch.shape == (4, 1, 8, 8)
    # bit-identical up to float round-off of batched vs single convolutions (≤ 1 grey level)
    assert (batch.int() - singles.int()).abs().max() <= 1
    assert (batch == singles).float().mean() > 0.99
    again = sample(unet, sampler, labels, seeds, 1.5, steps, null_class(unet), **kw)
    assert torch.equal(batch, again)


def test_sampler_counts_one_forward_per_step():
    unet = tiny_unet()
    calls = []
    unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    sample(unet, "dpmpp", [0, 1], [1, 2], 7.5, 4, null_class(unet), noise_schedule=SCHEDULE)
    assert calls == [4] * 4
    calls.clear()
    sample(unet, "ddpm", [0, 1], [1, 2], 0.0, None, null_class(unet), noise_schedule=SCHEDULE)
    assert calls == [2] * 6  # w = 0 skips the null half; ddpm runs all T = 6 steps


def test_sampler_crops_to_image_size():
    torch.manual_seed(0)
    unet = build_unet("tiny", 2, 1, (6, 6), block_out_channels=(8, 16, 16)).eval()  # 6 → padded to 8
    assert unet.config.sample_size == 8
    out = sample(unet, "ddim", [0], [0], 1.0, 2, null_class(unet), noise_schedule=SCHEDULE, image_size=(6, 6))
    assert out.shape == (1, 1, 6, 6)


# --- training ---------------------------------------------------------------------------------
def test_checkpoint_loads_with_plain_diffusers(trained):
    data, final, out = trained
    unet = UNet2DModel.from_pretrained(final)
    assert unet.config.num_class_embeds == data.num_classes + 1
    assert (final / "diffusion_pytorch_model.safetensors").is_file()
    info = json.loads((final / "generator.json").read_text())
    assert info["class_names"] == list(data.class_names) and info["image_size"] == [8, 8] and info["p_uncond"] == 0.1
    assert UNet2DModel.from_pretrained(out / "checkpoint-2" / "unet").config.num_class_embeds == 4
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))


def test_same_seed_same_weights(trained, tmp_path):
    data, final, _ = trained
    again = train_generator(data, CFGTrainConfig(**TINY), tmp_path, CPU, progress=False)
    a, b = UNet2DModel.from_pretrained(final).state_dict(), UNet2DModel.from_pretrained(again).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_resumes_from_the_latest_checkpoint(trained, tmp_path, monkeypatch):
    data, final, _ = trained
    real_save = train_module._save_checkpoint

    def save_then_crash(out_dir, step, *args):
        real_save(out_dir, step, *args)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_generator(data, CFGTrainConfig(**TINY), tmp_path, CPU, progress=False)
    assert not (tmp_path / "unet").exists() and (tmp_path / "checkpoint-2").is_dir()
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    started = []
    real_restore = train_module._restore_latest
    monkeypatch.setattr(train_module, "_restore_latest", lambda *a: started.append(real_restore(*a)) or started[-1])
    resumed = train_generator(data, CFGTrainConfig(**TINY), tmp_path, CPU, progress=False)
    assert started == [2]
    a, b = UNet2DModel.from_pretrained(final).state_dict(), UNet2DModel.from_pretrained(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run ends where the uninterrupted one did


def test_changed_config_does_not_resume(trained, tmp_path):
    data, _, out = trained
    with pytest.raises(DiffbalanceError, match="other settings"):
        train_generator(data, CFGTrainConfig(**{**TINY, "lr": 1e-4}), out, CPU, progress=False)


def test_config_rejects_unknown_keys_and_round_trips():
    with pytest.raises(DiffbalanceError, match="unknown generator training option"):
        CFGTrainConfig.from_dict({"train_step": 10})
    cfg = CFGTrainConfig(**TINY)
    assert CFGTrainConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_unet_matches_ddpm_cifar10_size():
    n = sum(p.numel() for p in build_unet("paper", 10, 3, (32, 32)).parameters())
    assert 35.7e6 < n < 35.8e6  # 35.7M (DDPM) + an 11 × 512 class embedding


# --- the rebalancer -----------------------------------------------------------------------------
def _params(final, **kw):
    return {"checkpoint": str(final), "sampler": "ddim", "num_inference_steps": 2, "batch_size": 2,
            "device": "cpu", **kw}


def test_rebalancer_fills_to_target_with_records(trained, tmp_path):
    data, final, _ = trained
    reb = build_rebalancer("cfg", _params(final))
    fills = fill(reb, data, [3, 0, 2], tmp_path / "fill", progress=False)
    assert fills.counts() == [3, 0, 2] and fills.images.shape[1:] == (1, 8, 8)
    rec = read_manifest(tmp_path / "fill")[0]
    assert {"seed", "guidance_w", "guidance_convention", "sampler", "steps", "checkpoint"} <= set(rec)
    assert rec["guidance_w"] == 7.5 and rec["guidance_convention"] == "ho" and rec["steps"] == 2


def test_resumed_fill_makes_exactly_the_missing_images(trained, tmp_path):
    data, final, _ = trained
    add = [5, 3, 0]
    whole = fill(build_rebalancer("cfg", _params(final)), data, add, tmp_path / "whole", progress=False)

    reb = build_rebalancer("cfg", _params(final))
    real_generate, made = reb.generate, []

    def crash_after_first_batch(c, seeds):
        if made:
            raise KeyboardInterrupt
        made.append(len(seeds))
        return real_generate(c, seeds)

    reb.generate = crash_after_first_batch
    with pytest.raises(KeyboardInterrupt):
        fill(reb, data, add, tmp_path / "cut", progress=False)
    assert len(read_manifest(tmp_path / "cut")) == 2
    reb2 = build_rebalancer("cfg", _params(final))
    asked = []
    real2 = reb2.generate
    reb2.generate = lambda c, seeds: asked.extend((c, s) for s in seeds) or real2(c, seeds)
    resumed = fill(reb2, data, add, tmp_path / "cut", progress=False)
    assert len(asked) == sum(add) - 2  # only the missing images
    keys = [(r["class_index"], r["index"]) for r in read_manifest(tmp_path / "cut")]
    assert len(keys) == len(set(keys)) == sum(add)  # none twice
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.labels, whole.labels)


def test_rebalancer_trains_on_the_fly_and_reuses_the_model(tmp_path):
    data = toy_set()
    params = {"sampler": "dpmpp", "num_inference_steps": 2, "device": "cpu", "train": {**TINY, "train_steps": 2}}
    fill(build_rebalancer("cfg", params), data, [1, 1, 1], tmp_path / "fill", workdir=tmp_path / "work", progress=False)
    (model,) = [p / "unet" for p in (tmp_path / "work").glob("cfg-generator-*")]
    stamp = (model / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    reb = build_rebalancer("cfg", params)
    reb.prepare(data, CPU, tmp_path / "work")
    assert (model / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


# --- bad inputs: one-line errors ------------------------------------------------------------------
def test_unknown_class_is_an_error(trained):
    data, final, _ = trained
    reb = build_rebalancer("cfg", _params(final))
    reb.prepare(data, CPU)
    with pytest.raises(DiffbalanceError, match="outside the generator's classes") as err:
        reb.generate(3, [1])
    assert "\n" not in str(err.value)


def test_missing_checkpoint_is_an_error(tmp_path):
    reb = build_rebalancer("cfg", {"checkpoint": str(tmp_path / "nope")})
    with pytest.raises(DiffbalanceError, match="no CFG generator checkpoint") as err:
        reb.prepare(toy_set(), CPU)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("other", [toy_set(num_classes=4), toy_set(size=16), toy_set(channels=3)])
def test_incompatible_checkpoint_is_an_error(trained, other):
    _, final, _ = trained
    reb = build_rebalancer("cfg", _params(final))
    with pytest.raises(DiffbalanceError, match="was trained for 3 classes at 8x8x1") as err:
        reb.prepare(other, CPU)
    assert "\n" not in str(err.value)


def test_bad_parameters_are_errors():
    with pytest.raises(DiffbalanceError):
        build_rebalancer("cfg", {"sampler": "euler"})
    with pytest.raises(DiffbalanceError):
        build_rebalancer("cfg", {"guidance_convention": "x"})
    with pytest.raises(DiffbalanceError):
        build_rebalancer("cfg", {"train": {"steps": 3}})


def test_cli_bad_config_is_a_one_line_error(tmp_path, capsys):
    from diffbalance.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train-generator", "--out", str(tmp_path / "g"), "--config", '{"train_step": 3}'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown generator training option") and "\n" not in err
