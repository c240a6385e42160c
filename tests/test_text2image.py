"""Fast CPU tests of `ldm` / `ldm-img2img` on a tiny random Stable Diffusion saved as a real model folder.

Real weights never load here: these tests check plumbing (loading path, seeds, sizes, records, resume,
errors), not image quality.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sd import IMAGE_SIZE, save_tiny_sd  # noqa: E402

from diffbalance.data.imageset import ImageSet  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402
from diffbalance.generate.schedulers import make_scheduler  # noqa: E402
from diffbalance.generate.text2image.postprocess import canvas_size, to_dataset_images, to_pipeline_images  # noqa: E402
from diffbalance.generate.text2image.prompts import class_prompt  # noqa: E402
from diffbalance.rebalance.registry import build_rebalancer, rebalancer_class  # noqa: E402
from diffbalance.rebalance.store import fill, read_manifest  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd"))


@pytest.fixture(scope="session")
def tiny_model_with_checker(tmp_path_factory) -> str:
    return str(save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-checker", safety_checker=True))


def tiny_train(channels: int = 3, size: int = 8) -> ImageSet:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, channels, size, size), generator=gen, dtype=torch.uint8)
    return ImageSet(images, torch.tensor([0, 0, 0, 0, 1, 1, 2]), ("pickup_truck", "cat", "ship"), "tiny")


def make(name: str, model: str, train: ImageSet | None = None, **params):
    reb = build_rebalancer(name, {"model": model, "num_inference_steps": 2, "batch_size": 3, "device": "cpu", **params})
    return reb.fit(train or tiny_train())


def strategy(data, add):
    """The sampling_strategy that adds `add[c]` images to class c (a {class: images after filling} mapping)."""
    return {c: n + a for c, (n, a) in enumerate(zip(data.counts(), add)) if a}


def test_registry_names_the_classes():
    assert rebalancer_class("ldm").__name__ == "TextToImageRebalancer"
    assert rebalancer_class("ldm-img2img").__name__ == "ImageToImageRebalancer"
    assert rebalancer_class("ldm").generative and rebalancer_class("ldm-img2img").generative


def test_shapes_dtype_and_records(tiny_model):
    reb = make("ldm", tiny_model)
    assert reb.size_ == (IMAGE_SIZE, IMAGE_SIZE)  # the pipeline's own size
    full, _ = reb.sample(1, [1, 2])
    assert full.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and full.dtype == torch.float32
    images, records = reb.generate(1, [1, 2, 3])
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8 and images.device == CPU
    assert len(records) == 3 and records[0]["seed"] == 1
    assert {"prompt", "negative_prompt", "seed", "model", "guidance_scale", "steps", "scheduler"} <= set(records[0])
    assert records[0]["guidance_scale"] == 7.5 and records[0]["steps"] == 2 and records[0]["scheduler"] == "dpmpp"
    assert records[0]["guidance_w"] == 6.5 and records[0]["guidance_convention"] == "ho"
    assert records[0]["guidance_w_ho"] == 6.5
    json.dumps(records)  # JSON-able


def test_same_seed_same_image_at_any_batch_size(tiny_model):
    reb = make("ldm", tiny_model)
    together, _ = reb.generate(0, [10, 11, 12])
    alone = torch.cat([reb.generate(0, [s])[0] for s in (10, 11, 12)])
    assert (together.int() - alone.int()).abs().max() <= 1  # float rounding of batched matmuls only
    assert not torch.equal(together[0], together[1])  # different seeds differ


def test_prompt_template_override_and_cleanup(tiny_model):
    reb = make("ldm", tiny_model, prompt_template="a photo of a {class}", class_prompts={"ship": "a {class} at sea"},
               negative_prompt="blurry")
    assert reb.generate(0, [1])[1][0]["prompt"] == "a photo of a pickup truck"  # underscores → spaces
    record = reb.generate(2, [1])[1][0]
    assert record["prompt"] == "a ship at sea" and record["negative_prompt"] == "blurry"
    assert class_prompt("pickup_truck") == "pickup truck"  # the paper's bare class name by default
    assert class_prompt("pickup_truck", clean=False) == "pickup_truck"


def test_downscale_is_antialiased_and_crops_non_square():
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2  # 1-pixel checkerboard
    images = checker.float().expand(2, 3, 32, 32).contiguous()
    small = to_dataset_images(images, (8, 8), 3)
    assert small.shape == (2, 3, 8, 8)
    assert (small.int() - 128).abs().max() <= 2  # averaged to mid-grey, not aliased to black/white
    aliased = F.resize(images, [8, 8], interpolation=F.InterpolationMode.NEAREST)
    assert (aliased.mean() - 0.5).abs() > 0.4  # what plain subsampling would give: all black or all white
    assert to_dataset_images(images, (8, 16), 3).shape == (2, 3, 8, 16)  # cover + centre crop
    assert canvas_size((8, 16), 32, 4) == (32, 64)


def test_grayscale_dataset_gets_luma(tiny_model):
    rgb = make("ldm", tiny_model)
    gray = make("ldm", tiny_model, tiny_train(channels=1))
    color, _ = rgb.generate(0, [5, 6])
    mono, _ = gray.generate(0, [5, 6])
    assert mono.shape == (2, 1, 8, 8)
    luma = F.rgb_to_grayscale(color.float() / 255)  # ITU-R 601: 0.299 R + 0.587 G + 0.114 B
    assert ((luma * 255).round() - mono.float()).abs().max() <= 1.5  # only uint8 rounding apart


def test_upscale_for_img2img_makes_three_channels():
    gray = torch.full((2, 1, 8, 8), 200, dtype=torch.uint8)
    up = to_pipeline_images(gray, (32, 32))
    assert up.shape == (2, 3, 32, 32) and torch.allclose(up, torch.full_like(up, 200 / 255), atol=1e-5)


def test_resume_after_interruption_makes_exactly_the_missing_images(tiny_model, tmp_path):
    train, add = tiny_train(), [5, 2, 0]
    reb = build_rebalancer("ldm", {"model": tiny_model, "num_inference_steps": 2, "batch_size": 2,
                                   "sampling_strategy": strategy(train, add)})
    calls = {"n": 0}
    real_generate = reb.generate

    def flaky_generate(c, seeds):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the run is cut off after its first batch
        return real_generate(c, seeds)

    reb.generate = flaky_generate
    with pytest.raises(KeyboardInterrupt):
        fill(reb, train, tmp_path / "fill", progress=False)
    assert len(read_manifest(tmp_path / "fill")) == 2
    reb.generate = real_generate
    resumed = fill(reb, train, tmp_path / "fill", progress=False)
    keys = [(r["class_index"], r["index"]) for r in read_manifest(tmp_path / "fill")]
    assert sorted(keys) == [(0, i) for i in range(5)] + [(1, 0), (1, 1)] and len(set(keys)) == len(keys)
    straight = fill(build_rebalancer("ldm", {"model": tiny_model, "num_inference_steps": 2, "batch_size": 7,
                                             "sampling_strategy": strategy(train, add)}),
                    train, tmp_path / "straight", progress=False)
    assert (resumed.images.int() - straight.images.int()).abs().max() <= 1  # same seeds → same images


def test_img2img_runs_and_records_its_source(tiny_model):
    train = tiny_train()
    reb = make("ldm-img2img", tiny_model, train, strength=0.5)
    images, records = reb.generate(0, [1, 2, 3])
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8
    for record in records:
        assert record["strength"] == 0.5 and int(train.labels[record["source_index"]]) == 0
    assert [r["source_index"] for r in records] == [reb.source_index(0, s) for s in (1, 2, 3)]  # seed decides
    assert reb.generate(2, [4])[1][0]["source_index"] == 6  # the class's only image
    gray, _ = make("ldm-img2img", tiny_model, tiny_train(channels=1)).generate(1, [1])
    assert gray.shape == (1, 1, 8, 8)


def test_other_schedulers_and_sd_pipeline(tiny_model):
    for scheduler in ("ddim", "euler_a", "default"):
        images, records = make("ldm", tiny_model, scheduler=scheduler).generate(0, [1])
        assert images.shape == (1, 3, 8, 8)
    assert records[0]["scheduler"] == "DDIMScheduler"  # default: the model's own, named
    reb = make("ldm", tiny_model, pipeline="sd", guidance_w=0.0, height=16, width=16)  # w = 0: no guidance
    assert type(reb.pipe_).__name__ == "StableDiffusionPipeline" and reb.size_ == (16, 16)
    assert reb.generate(0, [1])[0].shape == (1, 3, 8, 8)


def test_folder_without_safetensors_is_refused(tiny_model, tmp_path):
    folder = shutil.copytree(tiny_model, tmp_path / "pickled")
    for weights in folder.rglob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(DiffbalanceError, match="safetensors"):
        make("ldm", str(folder))
    # one component pickled only: diffusers' own refusal becomes the same one-line error
    folder = shutil.copytree(tiny_model, tmp_path / "half")
    (folder / "vae" / "diffusion_pytorch_model.safetensors").rename(folder / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(DiffbalanceError, match="safetensors"):
        make("ldm", str(folder))


def test_unknown_model_offline_is_one_line_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DiffbalanceError) as err:
        make("ldm", "nobody-here/no-such-model-xyz")
    message = str(err.value)
    assert "\n" not in message and "not downloadable" in message and "huggingface-cli download" in message
    with pytest.raises(DiffbalanceError, match="not downloadable"):
        make("ldm", str(Path(os.sep) / "no" / "such" / "folder"))


def test_safety_checker_kept_by_default_and_dropped_with_one_warning(tiny_model_with_checker, tiny_model, caplog):
    with caplog.at_level(logging.WARNING):
        kept = make("ldm", tiny_model_with_checker)
    assert kept.pipe_.safety_checker is not None and "safety checker disabled" not in caplog.text
    assert isinstance(kept.generate(0, [1])[1][0]["nsfw_flagged"], bool)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dropped = make("ldm", tiny_model_with_checker, safety_checker=False)
        dropped.generate(0, [1, 2])
        dropped.fit(tiny_train())  # same spec: no reload, no second warning
    assert dropped.pipe_.safety_checker is None
    assert caplog.text.count("safety checker disabled by option") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make("ldm", tiny_model, safety_checker=False)  # the model has none: nothing to warn about
    assert "safety checker disabled" not in caplog.text


@pytest.mark.parametrize(
    "params, match",
    [
        ({"scheduler": "plms"}, "scheduler"),
        ({"pipeline": "flux"}, "pipeline"),
        ({"prompt_template": "a photo"}, "class"),
        ({"height": 30}, "multiple of 8"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"guidance_w": -1.0}, "guidance_w"),
        ({"guidance_w": 0.5, "guidance_convention": "sd"}, "guidance_w"),
        ({"guidance_convention": "cfg"}, "guidance_convention"),
        ({"dtype": "int8"}, "dtype"),
        ({"no_such_option": 1}, "no parameter"),
    ],
)
def test_bad_options_are_one_line_errors(params, match):
    with pytest.raises(DiffbalanceError, match=match) as err:
        build_rebalancer("ldm", params)
    assert "\n" not in str(err.value)


def test_bad_img2img_options_and_unknown_class_prompt(tiny_model):
    with pytest.raises(DiffbalanceError, match="strength"):
        build_rebalancer("ldm-img2img", {"strength": 0})
    with pytest.raises(DiffbalanceError, match="no step"):
        build_rebalancer("ldm-img2img", {"strength": 0.2, "num_inference_steps": 2})
    with pytest.raises(DiffbalanceError, match="unknown classes"):
        make("ldm", tiny_model, class_prompts={"horse": "a horse"})


class Recorder:
    """Stands in for a loaded pipeline: records the keyword arguments of each call and delegates."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


def test_guidance_w_is_resolved_once_into_diffusers_guidance_scale(tiny_model):
    ho = make("ldm", tiny_model)  # default w = 6.5 ("ho") = diffusers' guidance_scale 7.5, the paper's setting
    sd = make("ldm", tiny_model, guidance_w=7.5, guidance_convention="sd")
    for reb in (ho, sd):
        reb.pipe_ = Recorder(reb.pipe_)
    (a, rec_a), (b, rec_b) = ho.generate(0, [3, 4]), sd.generate(0, [3, 4])
    assert ho.pipe_.calls[0]["guidance_scale"] == sd.pipe_.calls[0]["guidance_scale"] == 7.5
    assert torch.equal(a, b) and rec_a[0]["guidance_w_ho"] == rec_b[0]["guidance_w_ho"] == 6.5
    assert rec_b[0]["guidance_w"] == 7.5 and rec_b[0]["guidance_convention"] == "sd"


def _settings(scheduler) -> dict:
    """A scheduler's config without diffusers' bookkeeping of which values were defaults."""
    return {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}


def test_schedulers_come_from_the_models_own_config(tiny_model):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    saved = make("ldm", tiny_model, scheduler="default").pipe_.scheduler.config  # the model's DDIM config
    for name, cls in (("dpmpp", DPMSolverMultistepScheduler), ("ddim", DDIMScheduler),
                      ("euler_a", EulerAncestralDiscreteScheduler), ("default", DDIMScheduler)):
        got, want = make_scheduler(name, saved), cls.from_config(saved)
        assert type(got) is cls
        assert _settings(got) == _settings(want), name
    assert make("ldm", tiny_model).pipe_.scheduler.config.steps_offset == 1  # SD's offset carried over
