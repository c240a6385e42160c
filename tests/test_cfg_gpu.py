"""GPU tier of Method 1 (run with `pytest -m gpu`; skipped without CUDA): per-image seeds on the GPU, the bf16
sampling path, a sampling loop that never waits for the GPU, large batches, and a compiled training run.

Tolerances: a GPU picks other convolution kernels for other batch sizes, so "the same image" means the same up to
their round-off — in fp32 (TF32 convolutions) at most 2 grey levels anywhere; in bf16, whose ε carries 8 mantissa
bits, at most 1 grey level on average and 16 anywhere. Two different seeds differ by ~50 levels on average.
"""

from __future__ import annotations

import pytest
import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.generator import load_generator
from diffbalance.generate.cfg.sampling import (STEP_OPTIONS, STOCHASTIC, build_sampler, image_generators,
                                               initial_latents, make_cfg_scheduler, sample)
from diffbalance.generate.cfg.train import train_generator
from diffbalance.generate.cfg.unet import build_unet

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = torch.device("cuda")
SCHEDULE = CFGTrainConfig(num_train_timesteps=6).noise_schedule()
SAMPLERS = [("ddpm", None), ("ddim", 3), ("dpmpp", 3), ("dpmpp-sde", 3)]
TOLERANCE = {False: (0.1, 2), True: (1.0, 16)}  # bf16 → (mean, max) |difference| in grey levels


def tiny_unet():
    torch.manual_seed(0)
    return build_unet("tiny", 3, 1, (8, 8), block_out_channels=(8, 16)).to(CUDA).eval()


def differ(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    d = (a.int() - b.int()).abs()
    return d.float().mean().item(), int(d.max())


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("sampler,steps", SAMPLERS)
def test_same_seed_same_image_at_batch_sizes_1_3_and_8(sampler, steps, bf16):
    run = build_sampler(tiny_unet(), SCHEDULE, sampler, steps, 1.5, bf16=bf16)
    seeds = list(range(100, 108))
    labels = [s % 3 for s in seeds]
    eights = run(labels, seeds)
    threes = torch.cat([run(labels[k : k + 3], seeds[k : k + 3]) for k in range(0, 8, 3)])
    ones = torch.cat([run([c], [s]) for c, s in zip(labels, seeds)])
    mean, worst = TOLERANCE[bf16]
    for other in (threes, ones):
        got_mean, got_max = differ(eights, other)
        assert got_mean <= mean and got_max <= worst, (got_mean, got_max)
    assert differ(eights[:4], eights[4:])[0] > 10  # other seeds, other images
    assert torch.equal(eights, run(labels, seeds))  # the same batch twice: the same bits


@pytest.mark.parametrize("sampler,steps", SAMPLERS)
def test_the_sampling_loop_never_waits_for_the_gpu(sampler, steps):
    run = build_sampler(tiny_unet(), SCHEDULE, sampler, steps, 1.5)
    gens = image_generators([1, 2, 3], CUDA)
    latents = initial_latents(gens, (1, 8, 8))
    labels = torch.tensor([0, 1, 2], device=CUDA)
    scheduler = make_cfg_scheduler(sampler, SCHEDULE)
    scheduler.set_timesteps(run.steps)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any .item(), nonzero() or blocking copy raises
    try:
        x = sample(run.eps, latents, labels, scheduler, gens if sampler in STOCHASTIC else None,
                   **STEP_OPTIONS.get(sampler, {}))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


def test_bf16_runs_in_bf16_and_stays_near_fp32():
    unet = tiny_unet()
    seen = []
    unet.conv_in.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    seeds, labels = list(range(16)), [s % 3 for s in range(16)]
    fp32 = build_sampler(unet, SCHEDULE, "dpmpp", 3, 1.5)(labels, seeds)
    assert set(seen) == {torch.float32}
    seen.clear()
    bf16 = build_sampler(unet, SCHEDULE, "dpmpp", 3, 1.5, bf16=True)(labels, seeds)
    assert set(seen) == {torch.bfloat16}
    assert differ(fp32, bf16)[0] <= 3.0


def test_a_batch_of_512_samples():
    run = build_sampler(tiny_unet(), SCHEDULE, "dpmpp", 2, 7.5, bf16=True)
    images = run([k % 3 for k in range(512)], list(range(512)))
    assert images.shape == (512, 1, 8, 8) and images.dtype == torch.uint8
    assert differ(images[17:18], run([17 % 3], [17]))[1] <= TOLERANCE[True][1]  # image 17 alone: the same


def test_a_compiled_generator_trains_and_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (24, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(24) % 3,
                    ("a", "b", "c"))
    config = CFGTrainConfig(block_out_channels=(8, 16), num_train_timesteps=8, batch_size=8, train_steps=3,
                            checkpoint_every_steps=0)
    folder = train_generator(data, config, tmp_path, CUDA, progress=False, compile=True)
    gen = load_generator(folder, CUDA)
    assert all(torch.isfinite(p).all() for p in gen.unet.parameters())
    images = build_sampler(gen.unet, gen.noise_schedule, "dpmpp", 2, 1.0, gen.image_size, bf16=True)([0, 1], [3, 4])
    assert images.shape == (2, 1, 8, 8)
