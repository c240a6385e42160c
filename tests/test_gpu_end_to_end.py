"""GPU tier (`pytest -m gpu`): one tiny run end to end on CUDA — a fill, a CFG generator trained and sampled, the
classifiers with bf16/channels_last, FID features — and the same fill bytes as on the CPU for a classic method."""

import json

import pytest
import torch

from diffbalance.cli.main import main
from test_experiment import tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TINY_CFG = {"name": "cfg", "rebalancer": "cfg",
            "params": {"num_inference_steps": 4, "sampler": "ddim", "batch_size": 16,
                       "train": {"model_size": "tiny", "train_steps": 20, "warmup_steps": 2,
                                 "block_out_channels": [16, 32], "layers_per_block": 1}}}


def test_tiny_run_end_to_end_on_cuda(tmp_path):
    config = tiny_config(tmp_path, methods=["none", "cutmix", TINY_CFG], seeds=[0], ceiling=True,
                         train={"epochs": 2, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0.5, "bf16": True,
                                "channels_last": True},
                         fid={"features": "random"})
    main(["run", str(config), "--out", str(tmp_path / "gpu"), "--quiet", "--device", "cuda"])
    results = json.loads((tmp_path / "gpu" / "results.json").read_text())
    assert {r["method"] for r in results["runs"]} == {"none", "cutmix", "cfg", "balanced-ceiling"}
    assert all(r["device"].startswith("cuda") for r in results["runs"])
    assert "cfg" in results["quality"] and results["stage_seconds"]["fills"] > 0
    cpu = tiny_config(tmp_path / "cpu", methods=["cutmix"], seeds=[0])
    main(["run", str(cpu), "--out", str(tmp_path / "cpu" / "run"), "--quiet", "--device", "cpu"])
    gpu_pngs = sorted((tmp_path / "gpu" / "fills" / "cutmix").rglob("*.png"))
    cpu_pngs = sorted((tmp_path / "cpu" / "run" / "fills" / "cutmix").rglob("*.png"))
    assert [p.read_bytes() for p in gpu_pngs] == [p.read_bytes() for p in cpu_pngs]  # classic fills: device-free
