"""The class-conditional LDM (generate.cfg.latent): the cfg UNet trained in a VAE's latent space, on a tiny random
AutoencoderKL saved by the test and loaded through from_pretrained — the same samplers, guidance, real-guided starts,
synthetic share, per-image seeds and resume as the pixel generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from diffbalance.data.imageset import ImageSet
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.generator import load_generator
from diffbalance.generate.cfg.train import LATENTS_FILE, train_generator
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.rebalance.registry import build_rebalancer


def save_tiny_vae(folder, latent_channels: int = 4, seed: int = 0):
    """A randomly initialised AutoencoderKL with factor 2 (two levels, 8/16 channels)."""
    torch.manual_seed(seed)  # test fixture only
    AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=4, in_channels=3, out_channels=3,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  latent_channels=latent_channels, sample_size=16).save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_data(channels: int = 3, side: int = 12) -> ImageSet:
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 2)
    g = torch.Generator().manual_seed(0)
    images = (torch.randint(0, 60, (len(labels), channels, side, side), generator=g) + 80 * labels[:, None, None, None])
    return ImageSet(images.clamp(0, 255).to(torch.uint8), labels, ("a", "b", "c"))


def latent_config(vae, **kw) -> CFGTrainConfig:
    options = {"block_out_channels": (8, 16), "num_train_timesteps": 8, "batch_size": 4, "checkpoint_every_steps": 0,
               "train_steps": 3, **kw}
    return CFGTrainConfig(vae=str(vae), **options)


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


@pytest.fixture(scope="module")
def latent_generator(tmp_path_factory, vae):
    out = tmp_path_factory.mktemp("ldm") / "gen"
    train_generator(tiny_data(), latent_config(vae), out, "cpu", progress=False)
    return out


def test_the_generator_learns_latents_and_carries_its_vae(latent_generator):
    info = json.loads((latent_generator / "generator.json").read_text())
    # 12 px images, factor 2: 6×6 latents of 4 channels (the two-level test UNet takes 6×6 as it is)
    assert info["latent"]["latent_size"] == [6, 6] and info["latent"]["latent_channels"] == 4
    assert info["image_size"] == [12, 12] and info["channels"] == 3 and info["sample_size"] == [6, 6]
    assert (latent_generator / "vae" / "config.json").is_file() and (latent_generator / LATENTS_FILE).is_file()
    assert info["block_out_channels"] == [8, 16]  # the levels the UNet has, recorded (here the test's own)
    gen = load_generator(latent_generator, "cpu")
    assert gen.codec is not None and gen.unet.config.in_channels == 4


@pytest.mark.parametrize("params", [{"init": "noise"}, {"init": "real", "strength": 0.5},
                                    {"init": "noise", "synthetic_share": 0.5}])
def test_a_latent_generator_fills_like_a_pixel_one(latent_generator, params, tmp_path):
    data = tiny_data()
    X = data.images.permute(0, 2, 3, 1).numpy()
    y = data.labels.numpy()
    common = {"checkpoint": str(latent_generator), "sampler": "ddim", "num_inference_steps": 2, "device": "cpu",
              "guidance_w": 1.0, **params}
    X_res, y_res = build_rebalancer("cfg", {**common, "batch_size": 5}).fit_resample(X, y, workdir=tmp_path)
    assert X_res.shape == (18, 12, 12, 3) and X_res.dtype == np.uint8 and np.bincount(y_res).tolist() == [6, 6, 6]
    again, _ = build_rebalancer("cfg", {**common, "batch_size": 2}).fit_resample(X, y, workdir=tmp_path)
    assert np.array_equal(X_res, again)  # image k from its own seed, whatever the batch


def test_grey_images_go_through_the_vae_as_rgb(tmp_path, vae):
    grey = tiny_data(channels=1)
    out = train_generator(grey, latent_config(vae), tmp_path / "gen", "cpu", progress=False)
    X = grey.images.permute(0, 2, 3, 1).numpy()
    X_res, _ = build_rebalancer("cfg", {"checkpoint": str(out), "sampler": "ddim", "num_inference_steps": 2,
                                        "device": "cpu"}).fit_resample(X, grey.labels.numpy(), workdir=tmp_path)
    assert X_res.shape[1:] == (12, 12, 1)


def test_latents_are_encoded_once(tmp_path, vae, monkeypatch):
    import shutil

    from diffbalance.generate.cfg import latent

    out, config = tmp_path / "gen", latent_config(vae, checkpoint_every_steps=1, keep_checkpoints=3)
    train_generator(tiny_data(), config, out, "cpu", progress=False)
    for final in ("model_index.json", "generator.json"):  # as if killed after step 2: resumed from checkpoint-2
        (out / final).unlink()
    shutil.rmtree(out / "checkpoint-3")
    monkeypatch.setattr(latent.LatentCodec, "encode", lambda self, images: pytest.fail("encoded again"))
    train_generator(tiny_data(), config, out, "cpu", progress=False)
    assert json.loads((out / "generator.json").read_text())["train_steps_done"] == 3


def test_large_images_train_in_latent_space_and_not_in_pixels(tmp_path, vae):
    big = tiny_data(side=96)
    with pytest.raises(DiffbalanceError, match="up to 64×64; these are 96×96 — fix: train it in a VAE's latent"):
        build_rebalancer("cfg", {}).check_data(big)
    build_rebalancer("cfg", {"train": {"vae": str(vae)}}).check_data(big)  # the latent generator takes them


def test_a_vae_that_does_not_fit_the_unet_is_one_line(latent_generator, tmp_path):
    import shutil

    other = tmp_path / "gen"
    shutil.copytree(latent_generator, other)
    shutil.rmtree(other / "vae")
    save_tiny_vae(other / "vae", latent_channels=3)
    with pytest.raises(DiffbalanceError, match="has 3 latent channels, its UNet takes 4") as err:
        load_generator(other, "cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(DiffbalanceError, match="VAE"):
        train_generator(tiny_data(), latent_config(tmp_path / "no-vae"), tmp_path / "g2", "cpu", progress=False)


def test_the_unet_is_deepened_by_resolution_and_records_it():
    """One level more per doubling of the side past 32 (the last channel count repeated), so the deepest level
    works at the positions it has at 32 px; 32 px and below keep the named size; explicit channels are kept."""
    from diffbalance.generate.cfg.unet import build_unet, levels_for

    assert levels_for((16, 32, 64), 28) == levels_for((16, 32, 64), 32) == (16, 32, 64)
    assert levels_for((16, 32, 64), 64) == (16, 32, 64, 64)
    assert levels_for((64, 128, 128, 128), 128) == (64, 128, 128, 128, 128, 128)
    for side, levels in ((32, 3), (64, 4), (128, 5)):
        unet = build_unet("tiny", 3, 4, (side, side))
        assert len(unet.config.block_out_channels) == levels
        assert side // 2 ** (levels - 1) == 8  # the deepest level's side, the same as at 32 px
    assert build_unet("tiny", 3, 4, (64, 64), block_out_channels=(8, 16)).config.block_out_channels == (8, 16)
