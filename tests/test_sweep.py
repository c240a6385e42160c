"""The guidance sweep: every (w, sampler) filled and measured, the choice made on validation accuracy, reused."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.errors import DiffbalanceError  # noqa: E402
from diffbalance.experiment.config import ExperimentConfig  # noqa: E402

CFG = {"num_inference_steps": 2, "sampler": "ddim",
       "train": {"block_out_channels": [8, 16], "layers_per_block": 1, "train_steps": 3, "batch_size": 4,
                 "checkpoint_every_steps": 0}}


def test_sweep_needs_a_cfg_method_and_a_validation_split():
    with pytest.raises(DiffbalanceError, match="not a cfg method"):
        ExperimentConfig.from_dict({"methods": ["mixup"], "validation": {"per_class": 1}, "sweep": {"method": "mixup"}})
    with pytest.raises(DiffbalanceError, match="validation"):
        ExperimentConfig.from_dict({"methods": [{"name": "c", "rebalancer": "cfg"}], "sweep": {"method": "c"}})


def test_sweep_end_to_end(tmp_path):
    config = tiny_config(
        tmp_path, methods=["none", {"name": "cfg", "rebalancer": "cfg", "params": CFG}], seeds=[0],
        validation={"per_class": 1}, consistency=True, reference_images_per_class=4, fid={"features": "domain"},
        sweep={"method": "cfg", "guidance_w": [0, 2], "samplers": ["ddim", "dpmpp"], "train": {"epochs": 1}},
        train={"epochs": 1, "batch_size": 8})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    sweep = results["sweep"]
    assert set(sweep["points"]) == {"w0-ddim", "w2-ddim", "w0-dpmpp", "w2-dpmpp"}
    best = max(sweep["points"].values(), key=lambda p: (p["validation_accuracy"], -p["guidance_w"]))
    assert sweep["chosen"] == {"guidance_w": best["guidance_w"], "sampler": best["sampler"]}
    point = sweep["points"]["w0-ddim"]
    assert point["quality"]["precision_recall"]["recall"] is not None and point["consistency"] is not None
    fill = json.loads((out / "fills" / "cfg" / "fill.json").read_text())
    assert fill["params"]["guidance_w"] == best["guidance_w"] and fill["params"]["sampler"] == best["sampler"]
    records = [json.loads(x) for x in (out / "fills" / "cfg" / "manifest.jsonl").read_text().splitlines()]
    assert {r["guidance_w"] for r in records} == {best["guidance_w"]}
    assert "## Guidance sweep" in (out / "report.md").read_text() and (out / "figures" / "sweep.png").is_file()
