"""The runner drives the generative rebalancers like any other: cfg (a tiny UNet trained on the fly) and ldm /
ldm-img2img (a tiny random Stable Diffusion saved to disk and loaded through from_pretrained)."""

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config  # noqa: E402
from tiny_sd import save_tiny_sd  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402


def test_runner_with_cfg_ldm_and_img2img(tmp_path):
    model = save_tiny_sd(tmp_path / "tiny-sd")
    ldm = {"model": str(model), "num_inference_steps": 2, "prompt_template": "a photo of a {class}"}
    cfg_params = {"guidance_w": 1.0, "num_inference_steps": 2, "sampler": "ddim",
                  "train": {"block_out_channels": [8, 16], "layers_per_block": 1, "train_steps": 3, "batch_size": 4,
                            "checkpoint_every_steps": 0}}
    config = tiny_config(
        tmp_path,
        methods=[{"name": "cfg-w1", "rebalancer": "cfg", "params": cfg_params},
                 {"name": "cfg-w3", "rebalancer": "cfg", "params": {**cfg_params, "guidance_w": 3.0}},
                 {"name": "ldm", "rebalancer": "ldm", "params": ldm},
                 {"name": "ldm-img2img", "rebalancer": "ldm-img2img", "params": {**ldm, "strength": 0.6}}],
        seeds=[0], consistency=True, reference_images_per_class=6,
        train={"epochs": 1, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0.5},
    )
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["cfg-w1", "cfg-w3", "ldm", "ldm-img2img"]
    assert all(r["train_images"] == 27 for r in results["runs"])
    assert set(results["consistency"]) == {"reference", "cfg-w1", "cfg-w3", "ldm", "ldm-img2img"}
    assert results["consistency"]["ldm"]["images"] == 9
    # cfg-w1 and cfg-w3 differ only in sampling, so they share one generator trained once
    assert len(list((out / "generators").glob("cfg-*/*/unet"))) == 1
    records = [json.loads(line) for line in (out / "fills" / "ldm" / "manifest.jsonl").read_text().splitlines()]
    assert {r["prompt"] for r in records} == {"a photo of a dark", "a photo of a bright"}
    img2img = [json.loads(line) for line in (out / "fills" / "ldm-img2img" / "manifest.jsonl").read_text().splitlines()]
    assert all(r["strength"] == 0.6 and "source_index" in r for r in img2img)
    report = (out / "report.md").read_text()
    for m in ("cfg-w1", "ldm", "ldm-img2img"):
        assert f"figures/fills_{m}.png" in report and (out / "figures" / f"fills_{m}.png").is_file()
    assert "## Class consistency (%)" in report
    assert yaml.safe_load((out / "config.resolved.json").read_text())["methods"][2]["params"]["model"] == str(model)


def test_a_generator_folder_is_keyed_by_its_training_images_not_the_data_options(tmp_path):
    """OUT/generators/<rebalancer>-<key>: the same images under other data options (a new option, another cache
    setting) keep the folder, so a resumed study reuses its generator; other images or training settings do not."""
    from types import SimpleNamespace

    import torch

    from diffbalance.data.imageset import ImageSet
    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.fills import _workdir

    images = torch.arange(4 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 3, 4, 4)
    data = ImageSet(images, torch.tensor([0, 0, 1, 1]), ("a", "b"))

    def stage(imbalanced, **data_options):
        return SimpleNamespace(out_dir=tmp_path, imbalanced=imbalanced,
                               config=SimpleNamespace(data=SimpleNamespace(**data_options)))

    cfg = MethodConfig(name="c", rebalancer="cfg", params={"train": {"train_steps": 3}})
    folder = _workdir(stage(data, cache=True), cfg)
    assert folder.parent == tmp_path / "generators" and folder.name.startswith("cfg-")
    assert _workdir(stage(data, cache=False, a_later_option=1), cfg) == folder
    other = ImageSet(images.flip(0), torch.tensor([0, 0, 1, 1]), ("a", "b"))
    assert _workdir(stage(other), cfg) != folder
    assert _workdir(stage(data), cfg.replace(params={"train": {"train_steps": 4}})) != folder
