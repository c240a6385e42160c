"""The guidance sweep: every (w, sampler) filled and measured, the choice made on validation accuracy, reused."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402
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
    (sweep,) = results["sweep"]["sweeps"]
    order = ["w0-ddim", "w2-ddim", "w0-dpmpp", "w2-dpmpp"]  # every w with every sampler, samplers outermost
    assert list(sweep["points"]) == order and sweep["stages"][0]["points"] == order
    best = max(order, key=lambda lab: sweep["points"][lab]["validation_accuracy"])  # ties: the first
    assert sweep["chosen_point"] == best
    assert sweep["chosen"] == {"guidance_w": sweep["points"][best]["guidance_w"],
                               "sampler": sweep["points"][best]["sampler"], "guidance_convention": "ho"}
    point = sweep["points"]["w0-ddim"]
    assert point["quality"]["precision_recall"]["recall"] is not None and point["consistency"] is not None
    assert len(point["validation_accuracies"]) == 2 and point["validation_accuracy_std"] is not None  # seeds 0, 1
    fill = json.loads((out / "fills" / "cfg" / "fill.json").read_text())
    assert fill["params"]["guidance_w"] == sweep["points"][best]["guidance_w"]
    assert fill["params"]["sampler"] == sweep["points"][best]["sampler"]
    records = [json.loads(x) for x in (out / "fills" / "cfg" / "manifest.jsonl").read_text().splitlines()]
    assert {r["guidance_w"] for r in records} == {sweep["points"][best]["guidance_w"]}
    report = (out / "report.md").read_text()
    assert "## Sweeps" in report and (out / "figures" / "sweep_cfg.png").is_file()


def test_staged_sweep_of_strength_and_share_with_the_zero_points(tmp_path):
    real = {**CFG, "init": "real"}
    config = tiny_config(
        tmp_path, methods=["oversample", {"name": "cfg", "rebalancer": "cfg", "params": real},
                           {"name": "cfg-copy", "rebalancer": "cfg", "params": real}], seeds=[0],
        validation={"per_class": 1}, train={"epochs": 1, "batch_size": 8},
        sweep=[{"method": "cfg", "guidance_w": [1], "strength": [0, 0.5], "synthetic_share": [0, 0.5],
                "seeds": [0, 1], "max_images_per_class": 2, "also": ["cfg-copy"], "train": {"epochs": 1}}])
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    (sweep,) = results["sweep"]["sweeps"]
    assert [st["stage"] for st in sweep["stages"]] == ["guidance", "strength", "synthetic_share"]
    assert sweep["stages"][1]["points"][0] == "w1-ddim-real0"  # strength 0: oversampling, measured as a point
    assert len(sweep["points"]) <= 5  # one knob at a time: 1 + 2 + 2 at most
    score = {lab: p["validation_accuracy"] for lab, p in sweep["points"].items()}
    bests = [st["best"] for st in sweep["stages"]]
    assert all(score[b] >= score[a] for a, b in zip(bests, bests[1:]))  # never worse than the best so far
    chosen = sweep["points"][sweep["chosen_point"]]
    assert sweep["chosen_point"] == bests[-1]
    fill = json.loads((out / "fills" / "cfg" / "fill.json").read_text())["params"]
    assert (fill["strength"], fill["synthetic_share"]) == (chosen["strength"], chosen["synthetic_share"])
    also = json.loads((out / "fills" / "cfg-copy" / "fill.json").read_text())["params"]
    assert (also["strength"], also["synthetic_share"]) == (chosen["strength"], chosen["synthetic_share"])
    assert "### cfg (and cfg-copy)" in (out / "report.md").read_text()


def test_the_search_keeps_the_best_so_far_on_ties(monkeypatch, tmp_path):
    """Stage order, ties and the skipped strength stage, with scores set by hand."""
    from types import SimpleNamespace

    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.sweep import Sweeper, SweepConfig

    scores = {"w0.5-ddim": 0.6, "w2-ddim": 0.7, "w2-ddim-real0.5": 0.7, "w2-ddim-translate0.5": 0.65,
              "w2-ddim-share0": 0.72, "w2-ddim-share0.5": 0.72}
    sweeper = Sweeper(SimpleNamespace(validation=object(), out_dir=tmp_path, config=SimpleNamespace(
        classifiers=("small_cnn",))), fill_for=None)
    measured = []

    def measure(method, knobs, label, recipe, cfg):
        measured.append(label)
        return {**knobs, "validation_accuracy": scores[label]}

    monkeypatch.setattr(sweeper, "measure", measure)
    cfg = SweepConfig(method="cfg", guidance_w=(0.5, 2), samplers=("ddim",), init=("noise", "real", "translate"),
                      strength=(0.25, 0.75), synthetic_share=(0, 0.5, 1))
    result = sweeper.run(cfg, MethodConfig(name="cfg", rebalancer="cfg"))
    # real ties noise at 0.7: the best so far (noise) stays, so the strength stage is skipped
    assert [s.get("best") for s in result["stages"]] == ["w2-ddim", "w2-ddim", None, "w2-ddim-share0"]
    assert result["stages"][2] == {"stage": "strength", "skipped": "the best start so far is noise"}
    assert result["chosen"] == {"guidance_w": 2, "sampler": "ddim", "init": "noise", "strength": 0.5,
                                "synthetic_share": 0, "guidance_convention": "ho"}
    assert measured == ["w0.5-ddim", "w2-ddim", "w2-ddim-real0.5", "w2-ddim-translate0.5", "w2-ddim-share0",
                        "w2-ddim-share0.5"]  # share 1 is the best so far itself: not measured again


def test_bad_sweep_values_are_one_line_errors(tmp_path):
    base = {"methods": [{"name": "c", "rebalancer": "cfg"}, {"name": "d", "rebalancer": "cfg"}],
            "validation": {"per_class": 1}}
    for sweep, match in [({"method": "c", "strength": [1.5]}, "strength"),
                         ({"method": "c", "synthetic_share": [-1]}, "synthetic_share"),
                         ({"method": "c", "init": ["image"]}, "init"),
                         ({"method": "c", "seeds": [0, 0]}, "seeds"),
                         ([{"method": "c", "also": ["d"]}, {"method": "d"}], "more than one sweep")]:
        with pytest.raises(DiffbalanceError, match=match) as err:
            ExperimentConfig.from_dict({**base, "sweep": sweep})
        assert "\n" not in str(err.value)


def test_equal_scores_tie_whatever_their_last_bits(monkeypatch, tmp_path):
    """(0.69 + 0.65) / 2 and (0.68 + 0.66) / 2 are both 67 % of the images, but differ in the last bit as floats."""
    from types import SimpleNamespace

    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.sweep import Sweeper, SweepConfig

    means = {"w1-ddim-real0.5": (0.69 + 0.65) / 2, "w1-ddim-real0.25": (0.68 + 0.66) / 2}
    assert means["w1-ddim-real0.5"] != means["w1-ddim-real0.25"]
    sweeper = Sweeper(SimpleNamespace(validation=object(), out_dir=tmp_path, config=SimpleNamespace(
        classifiers=("small_cnn",))), fill_for=None)
    monkeypatch.setattr(sweeper, "measure", lambda method, knobs, label, recipe, cfg: {
        **knobs, "validation_accuracy": means[label]})
    cfg = SweepConfig(method="cfg", guidance_w=(1,), samplers=("ddim",), strength=(0.25,))
    result = sweeper.run(cfg, MethodConfig(name="cfg", rebalancer="cfg", params={"init": "real"}))
    assert result["chosen_point"] == "w1-ddim-real0.5"  # the tie keeps the best so far
