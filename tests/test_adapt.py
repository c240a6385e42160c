"""Fast CPU tests of `diffbalance adapt` (generate.adapt): LoRA and textual inversion on the tiny random Stable
Diffusion of tests/tiny_sd.py, trained on a two-class set of solid colours (6 red, 2 blue).

What they show: the probe loss falls; the adapted pipeline's images differ from the base's for the same seeds and
move toward the training images; the files load with plain diffusers (`load_lora_weights`,
`load_textual_inversion`) and reproduce the trained model; an interrupted or SIGKILLed run resumes bit-identical;
`ldm` / `ldm-img2img` use an adapter (given, or trained on the fly and reused); bad input is one line.

"Toward the training images" is measured on the latents (the RMS distance of a generated latent to the nearest
training image's VAE latent): the tiny VAE is random, so its decoder does not reconstruct the training images and a
pixel distance would measure the VAE, not the adaptation. Real weights never load here.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import crash_helpers as ch  # noqa: E402
from tiny_sd import IMAGE_SIZE, save_tiny_sd  # noqa: E402

import diffbalance.generate.adapt.train as adapt_train  # noqa: E402
from diffbalance.cli.main import main  # noqa: E402
from diffbalance.data.image_folder import write_image_folder  # noqa: E402
from diffbalance.data.imageset import ImageSet  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402
from diffbalance.generate.adapt import AdaptConfig, adapt_pipeline  # noqa: E402
from diffbalance.generate.adapt.data import batch_indices  # noqa: E402
from diffbalance.generate.adapt.lora import LORA_FILE  # noqa: E402
from diffbalance.generate.text2image.postprocess import to_pipeline_images  # noqa: E402
from diffbalance.rebalance.registry import build_rebalancer  # noqa: E402
from diffbalance.rebalance.store import fill, read_manifest  # noqa: E402
from diffbalance.infra.seeding import generator, generators  # noqa: E402

CPU = torch.device("cpu")
COLOURS = {"red": (230, 20, 20), "blue": (20, 20, 230)}
# the figures below are for these settings (tiny model, 30 steps: ~2 s a method on one core)
FAST = {"train_steps": 30, "checkpoint_every_steps": 10, "batch_size": 4}
LORA = AdaptConfig(method="lora", lr=1e-2, rank=4, alpha=8.0, **FAST)  # alpha ≠ rank: the saved scale must load
TI = AdaptConfig(method="textual-inversion", lr=5e-2, **FAST)
SEEDS = list(range(100, 108))  # generation seeds of the distance measurements


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are overhead-bound; on 2 shared cores a second OpenMP thread costs ~10× (diffbalance.infra.threads).
    OMP_NUM_THREADS=1 too, so the in-process CLI (configure_threads) and its subprocesses keep one."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd"))


def solid_set(names=("red", "blue"), counts=(6, 2), size: int = 8) -> ImageSet:
    """Solid-colour images, `counts[k]` of class k: a distinctive, imbalanced two-class set."""
    colours = [COLOURS.get(n, (120, 200, 40)) for n in names]
    images = torch.cat([torch.tensor(c, dtype=torch.uint8)[None, :, None, None].expand(n, 3, size, size)
                        for c, n in zip(colours, counts)]).contiguous()
    labels = torch.tensor([k for k, n in enumerate(counts) for _ in range(n)])
    return ImageSet(images, labels, tuple(names), "solid colours")


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {c.method: adapt_pipeline(solid_set(), tiny_model, c, root / c.method, "cpu", progress=False)
            for c in (LORA, TI)}


def ldm(model: str, train: ImageSet | None = None, name: str = "ldm", **params):
    reb = build_rebalancer(name, {"model": model, "num_inference_steps": 4, "batch_size": 8, "device": "cpu",
                                  "prompt_template": "a photo of a {class}", **params})
    return reb.fit(train or solid_set())


def info(folder: Path) -> dict:
    return json.loads((Path(folder) / "adapter.json").read_text())


def latent_distance(reb, class_index: int, train: ImageSet) -> float:
    """Mean over SEEDS of the RMS distance from the generated latent to the nearest training image's latent."""
    pipe = reb.pipe_
    with torch.no_grad():
        x = to_pipeline_images(train.images, (IMAGE_SIZE, IMAGE_SIZE)) * 2 - 1  # (N, 3, 32, 32)
        real = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor  # (N, 4, 16, 16)
        made = pipe(prompt=[reb.prompts_[class_index]] * len(SEEDS), num_inference_steps=reb.num_inference_steps,
                    guidance_scale=reb.guidance_scale_, output_type="latent", generator=generators(SEEDS)).images
    nearest = torch.cdist(made.flatten(1), real.flatten(1)).min(1).values  # (len(SEEDS),)
    return float(nearest.mean() / real[0].numel() ** 0.5)


# --- training --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lora", "textual-inversion"])
def test_the_probe_loss_falls(adapters, method):
    probe = info(adapters[method])["probe_loss"]
    losses = info(adapters[method])["train_loss"]
    print(f"{method}: probe loss {probe['start']:.4f} → {probe['end']:.4f}; "
          f"mean step loss, first 10 {sum(losses[:10]) / 10:.4f}, last 10 {sum(losses[-10:]) / 10:.4f}")
    assert len(losses) == FAST["train_steps"] and all(map(torch.isfinite, torch.tensor(losses)))
    assert probe["end"] < probe["start"] * (0.95 if method == "lora" else 0.995)


@pytest.mark.parametrize("method", ["lora", "textual-inversion"])
def test_adapted_images_differ_and_move_toward_the_training_images(tiny_model, adapters, method):
    train = solid_set()
    base, adapted = ldm(tiny_model, train), ldm(tiny_model, train, adapter=str(adapters[method]))
    assert not torch.equal(base.generate(1, SEEDS)[0], adapted.generate(1, SEEDS)[0])  # same seeds, other images
    before = [latent_distance(base, c, train) for c in (0, 1)]
    after = [latent_distance(adapted, c, train) for c in (0, 1)]
    print(f"{method}: latent distance to the nearest training image, base {before} → adapted {after}")
    assert all(a < b for a, b in zip(after, before)), (before, after)  # every class, the minority included
    # LoRA moves the UNet itself; a token moves only what cross-attention reads (−9 % and −2 % here)
    assert sum(after) < sum(before) * (0.95 if method == "lora" else 0.99), (before, after)


def test_class_balanced_sampling_gives_rare_classes_their_share():
    labels = torch.tensor([0] * 9 + [1])
    balanced = batch_indices(labels, 4000, True, generator(0))
    plain = batch_indices(labels, 4000, False, generator(0))
    assert abs(float((labels[balanced] == 1).float().mean()) - 0.5) < 0.03
    assert abs(float((labels[plain] == 1).float().mean()) - 0.1) < 0.02
    assert torch.equal(balanced, batch_indices(labels, 4000, True, generator(0)))  # the seed decides
    assert not torch.equal(balanced, batch_indices(labels, 4000, True, generator(1)))
    gapped = torch.tensor([0, 0, 2, 2, 2])  # class 1 has no image: never drawn, classes 0 and 2 half each
    drawn = gapped[batch_indices(gapped, 2000, True, generator(3))]
    assert set(drawn.tolist()) == {0, 2} and abs(float((drawn == 0).float().mean()) - 0.5) < 0.05


def test_options_text_encoder_lora_rare_tokens_v_prediction_and_checkpointing(tiny_model, tmp_path):
    """The less-travelled paths run and save what plain diffusers loads; gradient checkpointing changes the memory,
    not the result."""
    v_model = shutil.copytree(tiny_model, tmp_path / "tiny-sd-v")  # an SD 2.x-style v-prediction model
    scheduler = v_model / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "v_prediction"}))
    config = AdaptConfig(method="lora", train_text_encoder=True, identifier="rare-token", class_balanced=False,
                         resolution_px=16, train_steps=3, checkpoint_every_steps=0, lr=1e-2)
    plain = adapt_pipeline(solid_set(), str(v_model), config, tmp_path / "plain", "cpu", progress=False)
    checkpointed = adapt_pipeline(solid_set(), str(v_model), config.replace(gradient_checkpointing=True),
                                  tmp_path / "checkpointed", "cpu", progress=False)
    assert info(plain)["words"] == {"red": "sks0 red", "blue": "sks1 blue"}
    from safetensors.torch import load_file

    a, b = load_file(str(plain / LORA_FILE)), load_file(str(checkpointed / LORA_FILE))
    assert any(k.startswith("text_encoder.") for k in a) and any(k.startswith("unet.") for k in a)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    pipe = _plain_pipe(str(v_model))
    ids = pipe.tokenizer(["a photo of a sks1 blue"], return_tensors="pt").input_ids
    before = pipe.text_encoder(ids)[0]
    pipe.load_lora_weights(str(plain))
    assert (pipe.text_encoder(ids)[0] - before).abs().max() > 1e-4  # the text encoder's LoRA loaded too


# --- the ecosystem's formats -------------------------------------------------------------------------------------
def _plain_pipe(model: str):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _trained(model: str, folder: Path, config: AdaptConfig):
    """The adaptation as training left it: a fresh set-up with the final checkpoint's tensors."""
    from diffbalance.infra.checkpoint import load_training_state
    from diffbalance.generate.adapt.setup import prepare_adaptation

    ad = prepare_adaptation(solid_set(), model, config, CPU)
    state = load_training_state(folder / f"checkpoint-{config.train_steps}")
    adapt_train.TrainedTensors(ad.trained).load_state_dict(
        {k[len("adapter."):]: v for k, v in state.tensors.items() if k.startswith("adapter.")})
    return ad


def test_lora_loads_with_plain_diffusers_and_reproduces_the_trained_unet(tiny_model, adapters):
    pipe = _plain_pipe(tiny_model)
    pipe.load_lora_weights(str(adapters["lora"]))  # the folder: diffusers finds pytorch_lora_weights.safetensors
    assert (adapters["lora"] / LORA_FILE).is_file()
    ad = _trained(tiny_model, adapters["lora"], LORA)
    z, t = torch.randn(2, 4, 16, 16, generator=generator(0)), torch.tensor([10, 700])
    cond = ad.cond[[0, 1]]
    with torch.no_grad():
        want = ad.pipe.unet(z, t, cond).sample
        got = pipe.unet(z, t, cond).sample
        base = _plain_pipe(tiny_model).unet(z, t, cond).sample
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())  # alpha / rank scale included
    assert (got - base).abs().max() > 1e-3


def test_tokens_load_with_plain_diffusers_and_reproduce_the_trained_embeddings(tiny_model, adapters):
    folder, words = adapters["textual-inversion"], info(adapters["textual-inversion"])["words"]
    assert words == {"red": "<red>", "blue": "<blue>"}
    files = info(folder)["files"]["tokens"]
    pipe = _plain_pipe(tiny_model)
    pipe.load_textual_inversion(str(folder / files["<red>"]), token="<red>")  # a file
    pipe.load_textual_inversion(str((folder / files["<blue>"]).parent), token="<blue>")  # a folder
    ad = _trained(tiny_model, folder, TI)
    prompts = ["a photo of a <red>", "a photo of a <blue>"]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, ad.input_ids)  # the tokens got the ids they had in training
    with torch.no_grad():
        got, want = pipe.text_encoder(ids)[0], ad.pipe.text_encoder(ids)[0]
    assert torch.allclose(got, want, atol=1e-6)
    name_ids = pipe.tokenizer(["a photo of a red"], return_tensors="pt").input_ids
    assert torch.equal(pipe.text_encoder(name_ids)[0], _plain_pipe(tiny_model).text_encoder(name_ids)[0])  # untouched


# --- resume --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [LORA.replace(train_steps=7, checkpoint_every_steps=2),
                                    TI.replace(train_steps=7, checkpoint_every_steps=2)], ids=["lora", "ti"])
def test_an_interrupted_adaptation_resumes_bit_identical(tiny_model, tmp_path, monkeypatch, config):
    train = solid_set()
    straight = adapt_pipeline(train, tiny_model, config, tmp_path / "straight", "cpu", progress=False)
    real_step, calls = adapt_train._optimizer_step, {"n": 0}

    def cut_after_five(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # after checkpoint-4, before checkpoint-6
        return real_step(*args)

    monkeypatch.setattr(adapt_train, "_optimizer_step", cut_after_five)
    with pytest.raises(KeyboardInterrupt):
        adapt_pipeline(train, tiny_model, config, tmp_path / "cut", "cpu", progress=False)
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (tmp_path / "cut" / "adapter.json").exists()
    monkeypatch.setattr(adapt_train, "_optimizer_step", real_step)
    resumed = adapt_pipeline(train, tiny_model, config, tmp_path / "cut", "cpu", progress=False)
    assert ch.files(resumed) == ch.files(straight)
    for path in sorted(straight.rglob("*.safetensors")):
        ch.assert_same_tensors(path, resumed / path.relative_to(straight), "resumed")
    assert info(resumed) == info(straight)  # losses and probe losses to the last bit (JSON floats round-trip)


def test_kill_9_then_the_same_command_resumes_bit_identical(tiny_model, tmp_path):
    """`diffbalance adapt` in a subprocess, SIGKILLed at a seeded moment after its first checkpoint (as tests/
    crash_helpers.py does), then the same command again (in-process, to save a start-up); the folder ends exactly as
    an uninterrupted run of that command: the same files, bit-identical tensors, the same adapter.json."""
    images = write_image_folder(solid_set(), tmp_path / "images")
    config = json.dumps({"checkpoint_every_steps": 2, "lr": 0.01})
    args = ("adapt", str(images), "--out", "{out}", "--model", tiny_model, "--steps", "24", "--config", config,
            "--device", "cpu")
    cmd = ch.Command("adapt", args, lambda out: any(out.glob("checkpoint-*")),
                     lambda out: (out / "adapter.json").is_file(), tmp_path)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    proc = ch.start(cmd, killed, ch.cli_env(tmp_path / "cache"))  # it imports while the reference runs here
    main(cmd.argv(reference)[3:])  # one thread, as the subprocess (ch.cli_env): the same float sums
    # the window: the reference's training (adapt_config.json is written just before the first step)
    window_s = (reference / "adapter.json").stat().st_mtime - (reference / "adapt_config.json").stat().st_mtime
    progressed_at = ch.wait_for(proc, cmd, killed, cmd.progressed)
    fraction = random.Random("adapt/1").random()
    time.sleep(max(0.0, progressed_at + fraction * window_s - time.monotonic()))
    was_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    moment = (f"[SIGKILL {fraction:.3f} × {window_s:.2f} s after the first checkpoint; running: {was_running}; "
              f"done: {ch.progress_summary(killed)}]")
    print(moment)
    main(cmd.argv(killed)[3:])  # the same command, to the end
    ch.assert_clean_and_complete(reference, killed, moment)
    for path in sorted(reference.rglob("*.safetensors")):
        ch.assert_same_tensors(path, killed / path.relative_to(reference), moment)
    assert info(killed) == info(reference), moment


# --- the rebalancers -------------------------------------------------------------------------------------------------
def test_ldm_with_an_adapter_records_it_and_is_the_same_at_any_batch_size(tiny_model, adapters):
    folder = adapters["textual-inversion"]
    reb = ldm(tiny_model, adapter=str(folder))
    assert reb.prompts_ == ["a photo of a <red>", "a photo of a <blue>"]
    together, records = reb.generate(1, [10, 11, 12])
    alone = torch.cat([reb.generate(1, [s])[0] for s in (10, 11, 12)])
    assert (together.int() - alone.int()).abs().max() <= 1  # float rounding of batched matmuls only
    assert records[0]["adapter"] == str(folder) and records[0]["prompt"] == "a photo of a <blue>"
    lora = ldm(tiny_model, adapter=str(adapters["lora"]))
    assert lora.prompts_ == ["a photo of a red", "a photo of a blue"]  # LoRA keeps the class names
    assert "adapter" not in ldm(tiny_model).generate(0, [1])[1][0]  # no adapter: records as before
    img, rec = ldm(tiny_model, name="ldm-img2img", adapter=str(adapters["lora"]), strength=0.5).generate(1, [1, 2])
    assert img.shape == (2, 3, 8, 8) and rec[0]["adapter"] == str(adapters["lora"])


def test_ldm_adapts_on_the_fly_into_its_work_folder_once(tiny_model, tmp_path, monkeypatch):
    train = solid_set()
    params = {"adapt": {"method": "textual-inversion", "train_steps": 2, "checkpoint_every_steps": 0}}
    calls = []
    real = adapt_train.prepare_adaptation
    monkeypatch.setattr(adapt_train, "prepare_adaptation", lambda *a: calls.append(1) or real(*a))
    fills = fill(build_rebalancer("ldm", {"model": tiny_model, "num_inference_steps": 2, **params,
                                          "sampling_strategy": {"blue": 6}}), train, tmp_path / "fill", progress=False)
    assert fills.counts() == [0, 4] and len(calls) == 1
    (folder,) = (tmp_path / "fill" / ".work").glob("adapter-*")
    assert {r["adapter"] for r in read_manifest(tmp_path / "fill")} == {str(folder)}
    assert info(folder)["words"] == {"red": "<red>", "blue": "<blue>"}
    again = build_rebalancer("ldm", {"model": tiny_model, "num_inference_steps": 2, **params})
    again.fit(train, tmp_path / "fill" / ".work")  # same model, options and data: reused
    assert len(calls) == 1 and again.adapter_ == folder
    other = solid_set(counts=(5, 2))
    again.fit(other, tmp_path / "fill" / ".work")  # other data: a folder of its own
    assert len(calls) == 2 and len(list((tmp_path / "fill" / ".work").glob("adapter-*"))) == 2


# --- the command ------------------------------------------------------------------------------------------------------
def test_cli_adapt_then_rebalance_with_the_adapter(tiny_model, tmp_path, capsys):
    images = write_image_folder(solid_set(), tmp_path / "images")
    out = tmp_path / "adapter"
    (out / ".checkpoint-2.tmp-424242").mkdir(parents=True)  # what a killed run left half-written
    main(["adapt", str(images), "--out", str(out), "--method", "textual-inversion", "--model", tiny_model,
          "--steps", "3", "--config", '{"checkpoint_every_steps": 2, "resolution_px": 16}', "--device", "cpu"])
    assert f"adapter (textual-inversion) written to {out}" in capsys.readouterr().out
    assert not ch.temp_leftovers(out)
    command = json.loads((out / "command.json").read_text())
    assert command["config"]["resolution_px"] == 16 and command["train_counts"] == [6, 2]  # classes.json order
    assert info(out)["training_size"] == [16, 16] and info(out)["class_names"] == ["red", "blue"]
    main(["adapt", str(images), "--out", str(out), "--method", "textual-inversion", "--model", tiny_model,
          "--steps", "3", "--config", '{"checkpoint_every_steps": 2, "resolution_px": 16}', "--device", "cpu"])
    assert "written to" in capsys.readouterr().out  # finished: the same command returns at once
    params = json.dumps({"model": tiny_model, "adapter": str(out), "num_inference_steps": 2})
    main(["rebalance", str(images), "--method", "ldm", "--out", str(tmp_path / "fill"), "--params", params,
          "--image-size", "8", "--device", "cpu"])
    records = read_manifest(tmp_path / "fill")
    assert len(records) == 4 and {r["prompt"] for r in records} == {"<blue>"} and records[0]["adapter"] == str(out)


# --- bad input: one line, nothing written -----------------------------------------------------------------------
def one_line_error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("config, match", [
    ({"method": "dreambooth"}, "unknown method"),
    ({"rank": 0}, "rank"),
    ({"alpha": 0}, "alpha"),
    ({"resolution_px": 30}, "multiple of 8"),
    ({"prompt_template": "a photo"}, "class"),
    ({"method": "textual-inversion", "train_text_encoder": True}, "train_text_encoder"),
    ({"method": "textual-inversion", "identifier": "rare-token"}, "identifier"),
    ({"train_steps": 0}, "train_steps"),
    ({"lr": -1}, "lr"),
    ({"learning_rate": 1e-4}, "unknown"),
])
def test_bad_options_are_one_line_errors(config, match):
    with pytest.raises(DiffbalanceError, match=match) as err:
        AdaptConfig.from_dict(config)
    assert "\n" not in str(err.value)


def test_bad_commands_are_one_line_and_leave_out_untouched(tiny_model, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    images = write_image_folder(solid_set(), tmp_path / "images")
    out = tmp_path / "out"
    base = ["adapt", str(images), "--out", str(out), "--model", tiny_model, "--device", "cpu", "--steps", "2"]
    assert "rank" in one_line_error(capsys, [*base, "--config", '{"rank": 0}'])
    assert "use --method" in one_line_error(capsys, [*base, "--config", '{"method": "lora"}'])
    assert "not valid JSON" in one_line_error(capsys, [*base, "--config", "{rank"])
    assert "neither an image folder" in one_line_error(capsys, [*base[:1], str(tmp_path / "nope"), *base[2:]])
    pickled = shutil.copytree(tiny_model, tmp_path / "pickled")
    for weights in pickled.rglob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    assert "safetensors" in one_line_error(capsys, [*base[:4], "--model", str(pickled), *base[6:]])
    xl = shutil.copytree(tiny_model, tmp_path / "xl")
    index = json.loads((xl / "model_index.json").read_text())
    (xl / "model_index.json").write_text(json.dumps({**index, "text_encoder_2": index["text_encoder"]}))
    assert "1.x/2.x" in one_line_error(capsys, [*base[:4], "--model", str(xl), *base[6:]])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert "not downloadable" in one_line_error(capsys, [*base[:4], "--model", "nobody-here/no-such-model", *base[6:]])
    assert not out.exists()  # every failure above came before anything was written
    twins = write_image_folder(solid_set(names=("Red_car", "red car")), tmp_path / "twins")
    assert "same token" in one_line_error(capsys, ["adapt", str(twins), *base[2:], "--method", "textual-inversion"])


def test_adapter_mismatches_are_one_line_errors(tiny_model, adapters, tmp_path):
    folder = str(adapters["lora"])
    with pytest.raises(DiffbalanceError, match="has no class 'green'"):  # class names that do not match
        ldm(tiny_model, solid_set(names=("red", "green")), adapter=folder)
    with pytest.raises(DiffbalanceError, match="no adapter folder"):
        build_rebalancer("ldm", {"model": tiny_model, "adapter": str(tmp_path / "nope")}).check()
    unfinished = shutil.copytree(folder, tmp_path / "unfinished")
    (unfinished / "adapter.json").unlink()
    with pytest.raises(DiffbalanceError, match="not a finished adapter"):
        build_rebalancer("ldm", {"model": tiny_model, "adapter": str(unfinished)}).check()
    other = save_tiny_sd(tmp_path / "other-sd", seed=1)
    with pytest.raises(DiffbalanceError, match="was trained on"):
        build_rebalancer("ldm", {"model": str(other), "adapter": folder}).check()
    with pytest.raises(DiffbalanceError, match="adapt"):
        build_rebalancer("ldm", {"adapter": folder, "adapt": {"method": "lora"}})
    with pytest.raises(DiffbalanceError, match="another lr"):  # resuming with other options
        adapt_pipeline(solid_set(), tiny_model, LORA.replace(lr=0.5), adapters["lora"], "cpu", progress=False)
    with pytest.raises(DiffbalanceError, match="another data_sha256"):  # or on other images
        adapt_pipeline(solid_set(counts=(5, 2)), tiny_model, LORA, adapters["lora"], "cpu", progress=False)


def test_presets_adapt_before_filling():
    from diffbalance.experiment.config import load_config

    methods = {m.name: m for m in load_config("paper-cifar10").methods}
    for name, method in (("ldm-lora", "lora"), ("ldm-ti", "textual-inversion")):
        reb = build_rebalancer(methods[name].rebalancer, methods[name].params)
        assert reb.adapt.method == method and reb.adapt.resolution_px == 512
        assert reb.prompt_template == reb.adapt.prompt_template  # prompts as in training
