"""Over-generate and filter: selection, scores, and a filtered CFG method end to end (tiny UNet, CPU)."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.data.imageset import ImageSet  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402
from diffbalance.experiment.config import ExperimentConfig  # noqa: E402
from diffbalance.experiment.filter import FilterConfig, acceptance, score_candidates, select  # noqa: E402


def test_select_keeps_the_best_per_class_ties_by_index():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    score = torch.tensor([0.1, 0.9, 0.9, 0.5, 0.2, 0.8, 0.5])
    kept = select(labels, score, [2, 2])
    assert kept.tolist() == [False, True, True, True, False, True, False]  # class 1: 0.8, then the first 0.5


class StubJudge:
    """Logits favour class 0 for bright images; features are the mean brightness."""

    def logits(self, images):
        m = images.float().mean(dim=(1, 2, 3))[:, None] / 255
        return torch.cat([10 * (m - 0.5), -10 * (m - 0.5)], dim=1)

    def features(self, images):
        return torch.cat([images.float().mean(dim=(1, 2, 3))[:, None], torch.ones(len(images), 1)], dim=1)


def images_of(values):
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


def test_scores_prefer_confident_on_manifold_candidates():
    real = ImageSet(images_of([200, 210, 220, 30, 40]), torch.tensor([0, 0, 0, 1, 1]), ("bright", "dark"))
    cands = ImageSet(images_of([215, 90, 250, 35]), torch.tensor([0, 0, 0, 1]), ("bright", "dark"))
    s = score_candidates(StubJudge(), real, cands, FilterConfig(neighbours=1))
    assert s["confidence"][0] > s["confidence"][1] and s["in_class"].tolist() == [True, False, True, True]
    assert s["distance_ratio"][0] < s["distance_ratio"][2]  # 215 sits among the real 200-220, 250 does not
    assert s["score"][0] > s["score"][2] > s["score"][1]


def test_filter_only_on_generative_methods_and_checked_values():
    with pytest.raises(DiffbalanceError, match="generates nothing to filter"):
        ExperimentConfig.from_dict({"methods": [{"name": "m", "rebalancer": "mixup", "filter": {"factor": 2}}]})
    with pytest.raises(DiffbalanceError, match="factor"):
        ExperimentConfig.from_dict({"methods": [{"name": "c", "rebalancer": "cfg", "filter": {"factor": 0.5}}]})


@pytest.mark.parametrize("start", [{}, {"init": "translate", "strength": 0.5, "synthetic_share": 0.5}])
def test_filtered_cfg_end_to_end(tmp_path, start):
    cfg_params = {"guidance_w": 1.0, "num_inference_steps": 2, "sampler": "ddim", **start,
                  "train": {"block_out_channels": [8, 16], "layers_per_block": 1, "train_steps": 3, "batch_size": 4,
                            "checkpoint_every_steps": 0}}
    judge = {"epochs": 1, "batch_size": 4, "warmup_epochs": 0}
    config = tiny_config(tmp_path, methods=[
        {"name": "cfg", "rebalancer": "cfg", "params": cfg_params},
        {"name": "cfg-filtered", "rebalancer": "cfg", "params": cfg_params, "filter": {"factor": 2, "judge": judge}}],
        seeds=[0], train={"epochs": 1, "batch_size": 8})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    folder = out / "fills" / "cfg-filtered"
    assert json.loads((folder / "complete.json").read_text())["present_per_class"] == [6, 3, 0]
    selection = [json.loads(line) for line in (folder / "selection.jsonl").read_text().splitlines()]
    assert len(selection) == 18 and sum(r["kept"] for r in selection) == 9  # 2 × (6 + 3) candidates, 9 kept
    manifest = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert all({"candidate_index", "confidence", "distance_ratio", "score"} <= set(r) for r in manifest)
    # candidate j is exactly the unfiltered method's image j (same per-image seed, shared generator)
    plain = {(r["class_index"], r["index"]): r["seed"] for r in
             map(json.loads, (out / "fills" / "cfg" / "manifest.jsonl").read_text().splitlines())}
    cands = {(r["class_index"], r["index"]): r["seed"] for r in
             map(json.loads, (folder / "candidates" / "manifest.jsonl").read_text().splitlines())}
    assert all(cands[k] == plain[k] for k in plain)
    table = acceptance(folder, ["dark", "bright", "striped"])
    assert table["dark"]["candidates"] == 12 and table["dark"]["kept"] == 6
    report = (out / "report.md").read_text()
    assert "## Over-generation and filtering" in report and "filter_cfg-filtered_rejected.png" in report
    assert (out / "figures" / "filter_cfg-filtered_kept.png").is_file()
    before = (folder / "manifest.jsonl").read_text()
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])  # resumes: nothing changes
    assert (folder / "manifest.jsonl").read_text() == before


def test_methods_that_differ_only_in_training_share_one_fill(tmp_path, monkeypatch):
    from diffbalance.rebalance.mixing import MixupFill

    calls = []
    original = MixupFill.generate
    monkeypatch.setattr(MixupFill, "generate", lambda self, c, seeds: calls.append(len(seeds)) or original(self, c, seeds))
    config = tiny_config(tmp_path, methods=[{"name": "a", "rebalancer": "mixup"},
                                            {"name": "b", "rebalancer": "mixup", "train": {"label_smoothing": 0.1}}],
                         seeds=[0], train={"epochs": 1, "batch_size": 8})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    assert sum(calls) == 9  # one fill of 6 + 3 images, made once
    a, b = (out / "fills" / m / "manifest.jsonl" for m in ("a", "b"))
    assert a.read_text() == b.read_text() and (out / "fills" / "b" / "complete.json").is_file()
