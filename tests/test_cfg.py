"""Fast CPU tests of Method 1 (CFG): guidance maths, samplers, training/checkpoints/resume, the generator folder,
the rebalancer."""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.cfg import rebalancer as rebalancer_module
from diffbalance.generate.cfg import train as train_module
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.generate.cfg.generator import load_generator
from diffbalance.generate.cfg.guidance import GuidedEpsilon
from diffbalance.generate.cfg.loss import ddpm_loss
from diffbalance.generate.cfg.sampling import build_sampler, make_cfg_scheduler, sample
from diffbalance.generate.cfg.train import train_generator
from diffbalance.generate.cfg.unet import build_unet, crop_images, null_class, pad_images
from diffbalance.generate.guidance import guide, ho_weight, sd_scale
from diffbalance.generate.schedulers import make_scheduler
from diffbalance.rebalance.registry import build_rebalancer
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
    return data, train_generator(data, CFGTrainConfig(**TINY), out, "cpu", progress=False), out


def tiny_unet(num_classes=3, size=8) -> UNet2DModel:
    torch.manual_seed(0)
    return build_unet("tiny", num_classes, 1, (size, size), block_out_channels=(8, 16)).eval()


SCHEDULE = CFGTrainConfig(num_train_timesteps=6).noise_schedule()


def weights(folder) -> dict[str, torch.Tensor]:
    return UNet2DModel.from_pretrained(folder, subfolder="unet").state_dict()


# --- guidance (paper eq. 8) --------------------------------------------------------------------
def test_guidance_on_hand_values():
    cond, uncond = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    # (1 + w)·ε_c − w·ε_u with w = 2: 3·[1, 2] − 2·[0.5, −1] = [2, 8]
    assert torch.equal(guide(cond, uncond, 2.0), torch.tensor([2.0, 8.0]))
    assert torch.equal(guide(cond, uncond, 0.0), cond)  # w = 0: the conditional prediction


def test_sd_convention_equals_ho_with_w_minus_one():
    cond, uncond = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    assert torch.allclose(guide(cond, uncond, ho_weight(7.5, "sd")), guide(cond, uncond, 6.5))
    assert ho_weight(1.0, "sd") == 0.0 and ho_weight(7.5, "ho") == 7.5
    assert sd_scale(6.5, "ho") == 7.5 and sd_scale(7.5, "sd") == 7.5
    with pytest.raises(DiffbalanceError):
        build_rebalancer("cfg", {"guidance_convention": "cfg++"})


@pytest.mark.parametrize("params", [{"guidance_w": -0.5}, {"guidance_w": 0.5, "guidance_convention": "sd"}])
def test_negative_guidance_is_a_one_line_error(params):
    with pytest.raises(DiffbalanceError, match="guidance_w") as err:
        build_rebalancer("cfg", params)
    assert "\n" not in str(err.value)


def test_guided_epsilon_is_one_batched_forward():
    unet = tiny_unet()
    calls = []
    unet.register_forward_hook(lambda mod, args, kwargs_out: calls.append(args[0].shape[0]))
    x, labels = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    with torch.no_grad():
        eps = GuidedEpsilon(unet, null_class(unet), 2.0)(x, torch.tensor(5), labels)
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
    run = build_sampler(tiny_unet(), SCHEDULE, sampler, steps, 1.5)
    seeds, labels = [11, 22, 33, 44], [0, 1, 2, 1]
    batch = run(labels, seeds)
    singles = torch.cat([run([c], [s]) for c, s in zip(labels, seeds)])
    assert batch.dtype == torch.uint8 and batch.shape == (4, 1, 8, 8)
    # bit-identical up to float round-off of batched vs single convolutions (≤ 1 grey level)
    assert (batch.int() - singles.int()).abs().max() <= 1
    assert (batch == singles).float().mean() > 0.99
    assert torch.equal(batch, run(labels, seeds))


def test_sampler_counts_one_forward_per_step():
    unet = tiny_unet()
    calls = []
    unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    build_sampler(unet, SCHEDULE, "dpmpp", 4, 7.5)([0, 1], [1, 2])
    assert calls == [4] * 4
    calls.clear()
    build_sampler(unet, SCHEDULE, "ddpm", None, 0.0)([0, 1], [1, 2])
    assert calls == [2] * 6  # w = 0 skips the null half; ddpm runs all T = 6 steps


def test_sample_is_a_pure_function_of_its_inputs():
    scheduler = make_cfg_scheduler("ddim", SCHEDULE)
    scheduler.set_timesteps(3)
    seen = []

    def eps(x_t, t, class_labels):  # a stand-in ε̃: records what the sampler asks for
        seen.append((tuple(x_t.shape), int(t), class_labels.tolist()))
        return torch.zeros_like(x_t)

    latents = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = sample(eps, latents, torch.tensor([0, 2]), scheduler, eta=0.0)
    assert x.shape == (2, 1, 8, 8) and [s[1] for s in seen] == scheduler.timesteps.tolist()
    assert all(s[0] == (2, 1, 8, 8) and s[2] == [0, 2] for s in seen)
    scheduler.set_timesteps(3)
    assert torch.equal(x, sample(eps, latents, torch.tensor([0, 2]), scheduler, eta=0.0))


def test_sampler_crops_to_image_size():
    torch.manual_seed(0)
    unet = build_unet("tiny", 2, 1, (6, 6), block_out_channels=(8, 16, 16)).eval()  # 6 → padded to 8
    assert unet.config.sample_size == 8
    out = build_sampler(unet, SCHEDULE, "ddim", 2, 1.0, image_size=(6, 6))([0], [0])
    assert out.shape == (1, 1, 6, 6)


def _settings(scheduler) -> dict:
    """A scheduler's config without diffusers' bookkeeping of which values were defaults."""
    return {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}


def test_cfg_schedulers_use_only_the_forward_process():
    saved = DDPMScheduler(**SCHEDULE).config  # the training scheduler, with DDPM's own timestep_spacing etc.
    expected = {
        "ddpm": DDPMScheduler(**SCHEDULE, clip_sample=True),
        "ddim": DDIMScheduler(**SCHEDULE, clip_sample=True, timestep_spacing="trailing"),
        "dpmpp": DPMSolverMultistepScheduler(**SCHEDULE, algorithm_type="dpmsolver++", solver_order=2,
                                             thresholding=True, sample_max_value=1.0),
        "dpmpp-sde": DPMSolverMultistepScheduler(**SCHEDULE, algorithm_type="sde-dpmsolver++", solver_order=2,
                                                 thresholding=True, sample_max_value=1.0),
    }
    for name, want in expected.items():
        got = make_cfg_scheduler(name, saved)
        assert isinstance(got, type(want)) and type(got).__name__ == type(want).__name__  # dpmpp*: the clamp below
        assert _settings(got) == _settings(want), name
    assert make_cfg_scheduler("dpmpp", saved).config.timestep_spacing == "linspace"  # DDPM's "leading" not leaked


def reference_images(unet, sampler: str, steps: int | None, w: float, labels, seeds) -> torch.Tensor:
    """The sampler as first written: stock diffusers schedulers (DPM-Solver's thresholding by a per-step quantile),
    timesteps on the model's device, per-image CPU generators. The speed-ups must not move a CPU image."""
    from diffusers import DDIMScheduler as DDIM, DDPMScheduler as DDPM, DPMSolverMultistepScheduler as DPM

    scheduler = {"ddpm": lambda: DDPM(**SCHEDULE, clip_sample=True),
                 "ddim": lambda: DDIM(**SCHEDULE, clip_sample=True, timestep_spacing="trailing"),
                 "dpmpp": lambda: DPM(**SCHEDULE, algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
                                      sample_max_value=1.0),
                 "dpmpp-sde": lambda: DPM(**SCHEDULE, algorithm_type="sde-dpmsolver++", solver_order=2,
                                          thresholding=True, sample_max_value=1.0)}[sampler]()
    scheduler.set_timesteps(steps or SCHEDULE["num_train_timesteps"], device=CPU)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = torch.stack([torch.randn((1, 8, 8), generator=g) for g in gens])
    labels = torch.tensor(labels)
    options = {"generator": gens} if sampler in ("ddpm", "dpmpp-sde") else {}
    options.update({"eta": 0.0, "use_clipped_model_output": True} if sampler == "ddim" else {})
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, torch.full_like(labels, 3)])).sample
            x = scheduler.step(guide(*eps.chunk(2), w), t, x, **options).prev_sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 3), ("dpmpp", 3), ("dpmpp-sde", 3)])
def test_cpu_images_are_those_of_the_plain_diffusers_loop(sampler, steps, monkeypatch):
    unet, labels, seeds = tiny_unet(), [0, 1, 2], [5, 6, 7]
    want = reference_images(unet, sampler, steps, 2.0, labels, seeds)
    monkeypatch.setattr(torch, "quantile", lambda *a, **k: pytest.fail("a per-step quantile"))
    got = build_sampler(unet, SCHEDULE, sampler, steps, 2.0, bf16=True)(labels, seeds)  # bf16: CUDA only
    assert torch.equal(got, want)


def test_thresholding_at_one_is_the_clamp_it_amounts_to():
    scheduler = make_cfg_scheduler("dpmpp", SCHEDULE)
    stock = DPMSolverMultistepScheduler(**SCHEDULE, thresholding=True, sample_max_value=1.0)
    x0 = 3 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(scheduler._threshold_sample(x0), stock._threshold_sample(x0))
    assert torch.equal(scheduler._threshold_sample(x0), x0.clamp(-1, 1))
    wider = make_scheduler("dpmpp", SCHEDULE, thresholding=True, sample_max_value=2.0)  # a real quantile: left alone
    assert type(wider) is DPMSolverMultistepScheduler


def test_steps_beyond_the_schedule_are_an_error():
    with pytest.raises(DiffbalanceError, match="out of range"):
        build_sampler(tiny_unet(), SCHEDULE, "ddim", 7, 1.0)  # T = 6


# --- the loss (paper eq. 7) ----------------------------------------------------------------------
def test_ddpm_loss_draws_labels_then_t_then_noise():
    seen = {}

    class Probe(torch.nn.Module):  # ε_θ ≡ 0, recording its inputs
        def forward(self, x_t, t, class_labels):
            seen.update(x_t=x_t, t=t, c=class_labels)
            return type("Out", (), {"sample": torch.zeros_like(x_t)})()

    x0, labels = torch.rand(6, 1, 4, 4) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2])
    alphas = DDPMScheduler(**SCHEDULE).alphas_cumprod
    loss = ddpm_loss(Probe(), x0, labels, 3, alphas, 0.5, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same draws, in the documented order
    drop = torch.rand(6, generator=g) < 0.5
    t = torch.randint(0, 6, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a = alphas[t].view(-1, 1, 1, 1)
    assert torch.equal(seen["c"], torch.where(drop, 3, labels)) and torch.equal(seen["t"], t)
    assert torch.equal(seen["x_t"], a.sqrt() * x0 + (1 - a).sqrt() * eps)
    assert torch.equal(loss, eps.square().mean())  # ‖ε − 0‖²


def test_ddpm_loss_of_equal_parts_averages_to_the_whole_batch():
    model = tiny_unet()  # what DDP relies on: every rank draws for the whole batch, then evaluates its part
    x0, labels = torch.rand(6, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2])
    alphas = DDPMScheduler(**SCHEDULE).alphas_cumprod

    def loss(part=slice(None)):
        return ddpm_loss(model, x0, labels, 3, alphas, 0.5, torch.Generator().manual_seed(7), part)

    assert torch.allclose((loss(slice(0, 3)) + loss(slice(3, 6))) / 2, loss(), rtol=1e-6)


# --- training and the generator folder ------------------------------------------------------------
def test_generator_folder_loads_with_plain_diffusers(trained):
    data, folder, out = trained
    assert folder == out
    pipe = DiffusionPipeline.from_pretrained(folder)
    assert type(pipe).__name__ == "DDPMPipeline" and pipe.unet.config.num_class_embeds == data.num_classes + 1
    assert pipe.scheduler.config.num_train_timesteps == 8 and pipe.scheduler.config.beta_schedule == "linear"
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in unet.state_dict().items())
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    info = json.loads((folder / "generator.json").read_text())
    assert info["class_names"] == list(data.class_names) and info["image_size"] == [8, 8] and info["p_uncond"] == 0.1
    assert DiffusionPipeline.from_pretrained(out / "checkpoint-2").unet.config.num_class_embeds == 4
    assert (out / "checkpoint-2" / "train_state" / "state.safetensors").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))


def test_same_seed_same_weights(trained, tmp_path):
    data, final, _ = trained
    again = train_generator(data, CFGTrainConfig(**TINY), tmp_path, CPU, progress=False)
    a, b = weights(final), weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _crash_at_step_2(monkeypatch, data, folder):
    real_save = train_module._save_checkpoint

    def save_then_crash(out_dir, step, *args):
        real_save(out_dir, step, *args)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_generator(data, CFGTrainConfig(**TINY), folder, CPU, progress=False)
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)


def test_training_resumes_from_the_latest_checkpoint(trained, tmp_path, monkeypatch):
    data, final, _ = trained
    _crash_at_step_2(monkeypatch, data, tmp_path)
    assert not (tmp_path / "model_index.json").exists() and (tmp_path / "checkpoint-2").is_dir()
    started = []
    real_restore = train_module._restore_latest
    monkeypatch.setattr(train_module, "_restore_latest", lambda *a: started.append(real_restore(*a)) or started[-1])
    resumed = train_generator(data, CFGTrainConfig(**TINY), tmp_path, CPU, progress=False)
    assert started == [2]
    a, b = weights(final), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run ends where the uninterrupted one did


def test_changed_config_does_not_resume(trained, tmp_path):
    data, _, out = trained
    with pytest.raises(DiffbalanceError, match="other settings"):
        train_generator(data, CFGTrainConfig(**{**TINY, "lr": 1e-4}), out, CPU, progress=False)


def test_one_permutation_per_epoch_and_a_loss_read_every_n_steps(monkeypatch, tmp_path):
    data, perms, shown = toy_set(), [], []  # 24 images, batch 8: 4 steps cover epochs 0 and 1
    real_randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: perms.append(a[0]) or real_randperm(*a, **k))

    @contextlib.contextmanager
    def bar(description, total, enabled=True):
        yield lambda n=1, **fields: shown.append(sorted(fields))

    monkeypatch.setattr(train_module, "progress_bar", bar)
    monkeypatch.setattr(train_module, "LOSS_EVERY_STEPS", 2)
    train_generator(data, CFGTrainConfig(**{**TINY, "train_steps": 5}), tmp_path, CPU)
    assert perms == [24, 24]
    assert shown == [[], [], ["img_s", "loss"], [], ["img_s", "loss"], ["img_s", "loss"]]  # start, steps 1..5


def test_batch_defaults_by_model_size():
    assert CFGTrainConfig().batch_size == 32 and CFGTrainConfig(model_size="small").batch_size == 128
    assert CFGTrainConfig(model_size="paper", batch_size=64).batch_size == 64
    assert CFGTrainConfig.from_dict(CFGTrainConfig(model_size="paper").to_dict()).batch_size == 128
    with pytest.raises(DiffbalanceError, match="batch_size"):
        CFGTrainConfig(batch_size=-1)


def test_compile_is_ignored_on_the_cpu(trained, tmp_path):
    data, final, _ = trained
    again = train_generator(data, CFGTrainConfig(**TINY), tmp_path, CPU, progress=False, compile=True)
    a, b = weights(final), weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_rejects_unknown_keys_bad_values_and_round_trips():
    with pytest.raises(DiffbalanceError, match="train_step") as err:  # unknown key, named, with the valid ones
        CFGTrainConfig.from_dict({"train_step": 10})
    assert "train_steps" in str(err.value) and "\n" not in str(err.value)
    for bad in ({"model_size": "huge"}, {"beta_schedule": "cosine"}, {"p_uncond": 1.0}, {"lr": "fast"}):
        with pytest.raises(DiffbalanceError) as err:
            CFGTrainConfig.from_dict(bad, path="train")
        assert f"train.{next(iter(bad))}" in str(err.value) and "\n" not in str(err.value)
    cfg = CFGTrainConfig(**TINY)
    assert CFGTrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["block_out_channels"] == [8, 16]  # a list: the generator folder key hashes this JSON


def test_paper_unet_matches_ddpm_cifar10_size():
    n = sum(p.numel() for p in build_unet("paper", 10, 3, (32, 32)).parameters())
    assert 35.7e6 < n < 35.8e6  # 35.7M (DDPM) + an 11 × 512 class embedding


# --- folders of the older layout (unet/ holding generator.json; three-file train_state) -----------------
def to_old_layout(folder):
    """Rewrite a generator folder the way the code before the pipeline layout wrote it."""
    for unet in [u for u in [folder / "unet", *folder.glob("checkpoint-*/unet")] if u.is_dir()]:
        info = json.loads((unet.parent / "generator.json").read_text())
        info["noise_schedule"] = CFGTrainConfig(**TINY).noise_schedule()
        (unet / "generator.json").write_text(json.dumps(info))
        for name in ("model_index.json", "generator.json", "scheduler"):
            path = unet.parent / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for state_dir in folder.glob("checkpoint-*/train_state"):
        tensors, meta = load_file(state_dir / "state.safetensors"), json.loads((state_dir / "state.json").read_text())
        for name in ("model", "ema"):
            save_file({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(f"{name}.")},
                      state_dir / f"{name}.safetensors")
        save_file({k[len("optimizer."):]: v.reshape(1) if k.endswith(".step") else v
                   for k, v in tensors.items() if k.startswith("optimizer.")}, state_dir / "optimizer.safetensors")
        (state_dir / "state.json").write_text(json.dumps({"step": meta["step"], "config": meta["config"],
                                                          "param_groups": meta["optimizer_param_groups"]}))
        (state_dir / "state.safetensors").unlink()


def test_old_layout_samples_the_same_and_is_finished_in_place(trained, tmp_path):
    data, final, _ = trained
    old = shutil.copytree(final, tmp_path / "old")
    to_old_layout(old)
    assert not (old / "model_index.json").exists()
    new_gen, old_gen = load_generator(final, CPU), load_generator(old, CPU)
    assert old_gen.folder == old / "unet" and old_gen.noise_schedule == new_gen.noise_schedule
    strategy = {"sampling_strategy": {0: 10, 2: 9}}
    a = fill(build_rebalancer("cfg", _params(final, **strategy)), data, tmp_path / "a", progress=False)
    b = fill(build_rebalancer("cfg", _params(old, **strategy)), data, tmp_path / "b", progress=False)
    assert torch.equal(a.images, b.images)
    assert train_generator(data, CFGTrainConfig(**TINY), old, CPU, progress=False) == old  # finished: no training
    assert DiffusionPipeline.from_pretrained(old).scheduler.config.num_train_timesteps == 8
    assert all(torch.equal(v, weights(final)[k]) for k, v in weights(old).items())


def test_resumes_from_an_old_layout_checkpoint(trained, tmp_path, monkeypatch):
    data, final, _ = trained
    _crash_at_step_2(monkeypatch, data, tmp_path)
    to_old_layout(tmp_path)
    assert (tmp_path / "checkpoint-2" / "train_state" / "optimizer.safetensors").is_file()
    resumed = train_generator(data, CFGTrainConfig(**TINY), tmp_path, CPU, progress=False)
    a, b = weights(final), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- the rebalancer -----------------------------------------------------------------------------
def strategy(data, add):
    """The sampling_strategy that adds `add[c]` images to class c (a {class: images after filling} mapping)."""
    return {c: n + a for c, (n, a) in enumerate(zip(data.counts(), add)) if a}


def _params(final, **kw):
    return {"checkpoint": str(final), "sampler": "ddim", "num_inference_steps": 2, "batch_size": 2,
            "device": "cpu", **kw}


def test_rebalancer_fills_to_target_with_records(trained, tmp_path):
    data, final, _ = trained
    reb = build_rebalancer("cfg", _params(final, sampling_strategy=strategy(data, [3, 0, 2])))
    fills = fill(reb, data, tmp_path / "fill", progress=False)
    assert fills.counts() == [3, 0, 2] and fills.images.shape[1:] == (1, 8, 8)
    rec = read_manifest(tmp_path / "fill")[0]
    assert {"seed", "guidance_w", "guidance_convention", "guidance_w_ho", "sampler", "steps", "checkpoint"} <= set(rec)
    assert rec["guidance_w"] == 7.5 and rec["guidance_convention"] == "ho" and rec["guidance_w_ho"] == 7.5
    assert rec["steps"] == 2


def test_guidance_convention_is_resolved_once(trained, tmp_path, monkeypatch):
    data, final, _ = trained
    sd = build_rebalancer("cfg", _params(final, guidance_w=7.5, guidance_convention="sd"))
    ho = build_rebalancer("cfg", _params(final, guidance_w=6.5))
    for reb in (sd, ho):
        reb.prepare(data, CPU, tmp_path)
    assert sd.sampler_.eps.guidance_w == ho.sampler_.eps.guidance_w == 6.5
    monkeypatch.setattr(rebalancer_module, "ho_weight", lambda *a: pytest.fail("convention resolved per batch"))
    (a, rec_a), (b, rec_b) = sd.generate(1, [5, 6, 7]), ho.generate(1, [5, 6, 7])
    assert torch.equal(a, b)  # "sd" 7.5 and "ho" 6.5 are the same guidance
    assert rec_a[0]["guidance_w_ho"] == rec_b[0]["guidance_w_ho"] == 6.5 and rec_a[0]["guidance_convention"] == "sd"


def test_resumed_fill_makes_exactly_the_missing_images(trained, tmp_path):
    data, final, _ = trained
    params = _params(final, sampling_strategy=strategy(data, [5, 3, 0]))
    whole = fill(build_rebalancer("cfg", params), data, tmp_path / "whole", progress=False)

    reb = build_rebalancer("cfg", params)
    real_generate, made = reb.generate, []

    def crash_after_first_batch(c, seeds):
        if made:
            raise KeyboardInterrupt
        made.append(len(seeds))
        return real_generate(c, seeds)

    reb.generate = crash_after_first_batch
    with pytest.raises(KeyboardInterrupt):
        fill(reb, data, tmp_path / "cut", progress=False)
    assert len(read_manifest(tmp_path / "cut")) == 2
    reb2 = build_rebalancer("cfg", params)
    asked = []
    real2 = reb2.generate
    reb2.generate = lambda c, seeds: asked.extend((c, s) for s in seeds) or real2(c, seeds)
    resumed = fill(reb2, data, tmp_path / "cut", progress=False)
    assert len(asked) == 8 - 2  # only the missing images
    keys = [(r["class_index"], r["index"]) for r in read_manifest(tmp_path / "cut")]
    assert len(keys) == len(set(keys)) == 8  # none twice
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.labels, whole.labels)


def test_rebalancer_trains_on_the_fly_and_reuses_the_model(tmp_path):
    data = toy_set()
    params = {"sampler": "dpmpp", "num_inference_steps": 2, "device": "cpu", "train": {**TINY, "train_steps": 2},
              "sampling_strategy": strategy(data, [1, 1, 1])}
    fill(build_rebalancer("cfg", params), data, tmp_path / "fill", workdir=tmp_path / "work", progress=False)
    (folder,) = (tmp_path / "work").glob("cfg-generator-*")
    assert (folder / "model_index.json").is_file()
    model = folder / "unet"
    stamp = (model / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    reb = build_rebalancer("cfg", params)
    assert isinstance(reb.train, CFGTrainConfig) and reb.get_params()["train"] is reb.train
    reb.prepare(data, CPU, tmp_path / "work")
    assert (model / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


# --- bad inputs: one-line errors ------------------------------------------------------------------
def test_unknown_class_is_an_error(trained, tmp_path):
    data, final, _ = trained
    reb = build_rebalancer("cfg", _params(final))
    reb.prepare(data, CPU, tmp_path)
    with pytest.raises(DiffbalanceError, match="outside the generator's classes") as err:
        reb.generate(3, [1])
    assert "\n" not in str(err.value)


def test_missing_checkpoint_is_an_error(tmp_path):
    reb = build_rebalancer("cfg", {"checkpoint": str(tmp_path / "nope")})
    with pytest.raises(DiffbalanceError, match="no CFG generator checkpoint") as err:
        reb.prepare(toy_set(), CPU, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("other", [toy_set(num_classes=4), toy_set(size=16), toy_set(channels=3)])
def test_incompatible_checkpoint_is_an_error(trained, other, tmp_path):
    _, final, _ = trained
    reb = build_rebalancer("cfg", _params(final))
    with pytest.raises(DiffbalanceError, match="was trained for 3 classes at 8x8x1") as err:
        reb.prepare(other, CPU, tmp_path)
    assert "\n" not in str(err.value)


def test_bad_parameters_are_errors():
    with pytest.raises(DiffbalanceError):
        build_rebalancer("cfg", {"sampler": "euler"})
    with pytest.raises(DiffbalanceError):
        build_rebalancer("cfg", {"guidance_convention": "x"})
    with pytest.raises(DiffbalanceError):
        build_rebalancer("cfg", {"train": {"steps": 3}})
    with pytest.raises(DiffbalanceError, match="num_inference_steps"):
        build_rebalancer("cfg", {"num_inference_steps": 0})


def test_cli_bad_config_is_a_one_line_error(tmp_path, capsys):
    from diffbalance.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train-generator", "--out", str(tmp_path / "g"), "--config", '{"train_step": 3}'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train_step" in err and "train_steps" in err and "\n" not in err
