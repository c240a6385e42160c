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


def test_sweep_needs_a_method_with_knobs_and_a_validation_split():
    with pytest.raises(DiffbalanceError, match="not a method with knobs to sweep") as err:
        ExperimentConfig.from_dict({"methods": ["mixup"], "validation": {"per_class": 1}, "sweep": {"method": "mixup"}})
    assert "cfg, ldm, ldm-img2img" in str(err.value)  # the rebalancers that declare sweep_knobs, from the registry
    with pytest.raises(DiffbalanceError, match="validation"):
        ExperimentConfig.from_dict({"methods": [{"name": "c", "rebalancer": "cfg"}], "sweep": {"method": "c"}})


def test_a_sweep_sets_only_knobs_its_rebalancer_declares():
    ldm = {"name": "l", "rebalancer": "ldm", "params": {"model": "some/model"}}
    with pytest.raises(DiffbalanceError, match=r"sweep\[0\]\.init: ldm has no knob init") as err:
        ExperimentConfig.from_dict({"methods": [ldm], "validation": {"per_class": 1},
                                    "sweep": {"method": "l", "guidance_w": [1], "init": ["real"]}})
    assert "guidance_w, synthetic_share" in str(err.value)


def test_a_sweep_over_a_pretrained_model_chooses_its_strength(tmp_path):
    """Any rebalancer that declares sweep_knobs is swept the same way: ldm-img2img on a tiny random Stable
    Diffusion, its w and strength chosen on the folds."""
    from tiny_sd import save_tiny_sd

    model = str(save_tiny_sd(tmp_path / "tiny-sd"))
    params = {"model": model, "num_inference_steps": 2, "strength": 0.5}
    config = tiny_config(
        tmp_path, methods=["oversample", {"name": "sd", "rebalancer": "ldm-img2img", "params": params}], seeds=[0],
        validation={"per_class": 1},
        sweep={"method": "sd", "guidance_w": [0, 2], "strength": [0.5, 1.0], "train": {"epochs": 1}},
        train={"epochs": 1, "batch_size": 8})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    (sweep,) = json.loads((out / "results.json").read_text())["sweep"]["sweeps"]
    assert [s["stage"] for s in sweep["stages"]] == ["guidance", "strength"]
    assert sweep["stages"][0]["points"] == ["w0-real0.5", "w2-real0.5"]  # no sampler knob: none in the labels
    centre = sweep["best_point"]
    assert all(lab.startswith(centre.split("-")[0]) for lab in sweep["stages"][1]["points"])
    fill = json.loads((out / "fills" / "sd" / "fill.json").read_text())
    if sweep["chosen_point"] == "copies":
        assert fill["params"]["synthetic_share"] == 0
    else:
        point = sweep["points"][sweep["chosen_point"]]
        assert (fill["params"]["guidance_w"], fill["params"]["strength"]) == (point["guidance_w"], point["strength"])


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
    assert list(sweep["points"]) == ["copies", *order] and sweep["stages"][0]["points"] == order
    best = max(order, key=lambda lab: sweep["points"][lab]["score"])  # the centre: ties the first
    assert sweep["best_point"] == best
    # the copies stay chosen unless a point beats them by more than one standard error
    margins = sweep["stages"][0]["margins"]
    winners = [lab for lab in order if margins[lab]["margin_se"] > 1]
    chosen = max(winners, key=lambda lab: sweep["points"][lab]["score"]) if winners else "copies"
    assert sweep["chosen_point"] == chosen
    point = sweep["points"]["w0-ddim"]
    assert point["quality"]["precision_recall"]["recall"] is not None and point["consistency"] is not None
    assert [(r["fold"], r["seed"]) for r in point["scores"]] == [(0, 0), (0, 1)]  # one held-out split, seeds 0, 1
    assert point["score_name"] == "balanced_accuracy" and point["score_std"] is not None
    assert sweep["cv_results"]["label"] == ["copies", *order] and "split1_test_score" in sweep["cv_results"]
    fill = json.loads((out / "fills" / "cfg" / "fill.json").read_text())
    records = [json.loads(x) for x in (out / "fills" / "cfg" / "manifest.jsonl").read_text().splitlines()]
    if chosen == "copies":
        assert fill["params"]["synthetic_share"] == 0 and all("guidance_w" not in r for r in records)  # copies
    else:
        assert fill["params"]["guidance_w"] == sweep["points"][chosen]["guidance_w"]
        assert {r["guidance_w"] for r in records} == {sweep["points"][chosen]["guidance_w"]}
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
    score = {lab: p["score"] for lab, p in sweep["points"].items()}
    bests = [st["best"] for st in sweep["stages"]]
    assert all(score[b] >= score[a] for a, b in zip(bests, bests[1:]))  # the centre never gets worse
    chosen = [st["chosen"] for st in sweep["stages"]]
    for st in sweep["stages"]:  # the chosen point moves only to a point that beats it by more than one SE
        if st["chosen"] != st["against"]:
            assert st["margins"][st["chosen"]]["margin_se"] > 1
    assert sweep["chosen_point"] == chosen[-1]
    fill = json.loads((out / "fills" / "cfg" / "fill.json").read_text())["params"]
    if chosen[-1] == "copies":
        assert fill["synthetic_share"] == 0
    else:
        point = sweep["points"][chosen[-1]]
        assert (fill["strength"], fill["synthetic_share"]) == (point["strength"], point["synthetic_share"])
    also = json.loads((out / "fills" / "cfg-copy" / "fill.json").read_text())["params"]
    assert also["synthetic_share"] == fill["synthetic_share"] and also.get("strength") == fill.get("strength")
    assert "### cfg (and cfg-copy)" in (out / "report.md").read_text()


def hand_sweeper(tmp_path, monkeypatch, splits: dict[str, list[float]]):
    """A Sweeper whose points score `splits[label]` on (fold, seed) splits 0..n-1, and the labels it measured."""
    from types import SimpleNamespace

    from diffbalance.experiment.sweep import Sweeper

    sweeper = Sweeper(SimpleNamespace(folds=[object()], out_dir=tmp_path, config=SimpleNamespace(
        classifiers=("small_cnn",), validation=None)), fill_for=None)
    measured = []

    def measure(method, knobs, label, recipe, cfg):
        measured.append(label)
        values = splits[label]
        return {**knobs, "score": sum(values) / len(values),
                "scores": [{"fold": k, "seed": 0, "score": v} for k, v in enumerate(values)]}

    monkeypatch.setattr(sweeper, "measure", measure)
    return sweeper, measured


def test_the_search_keeps_the_best_so_far_on_ties(monkeypatch, tmp_path):
    """Stage order, ties and the skipped strength stage, with scores set by hand."""
    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.sweep import SweepConfig

    flat = {"copies": 0.5, "w0.5-ddim": 0.6, "w2-ddim": 0.7, "w2-ddim-real0.5": 0.7, "w2-ddim-translate0.5": 0.65,
            "w2-ddim-share0": 0.72, "w2-ddim-share0.5": 0.72}
    sweeper, measured = hand_sweeper(tmp_path, monkeypatch, {k: [v + 0.01, v - 0.01, v] for k, v in flat.items()})
    cfg = SweepConfig(method="cfg", guidance_w=(0.5, 2), samplers=("ddim",), init=("noise", "real", "translate"),
                      strength=(0.25, 0.75), synthetic_share=(0, 0.5, 1))
    result = sweeper.run(cfg, MethodConfig(name="cfg", rebalancer="cfg"))
    # real ties noise at 0.7: the centre so far (noise) stays, so the strength stage is skipped
    assert [s.get("best") for s in result["stages"]] == ["w2-ddim", "w2-ddim", None, "w2-ddim-share0"]
    assert result["stages"][2] == {"stage": "strength", "skipped": "the centre so far starts from noise"}
    # every paired difference is the same here (std 0): w2 beats the copies outright, share0 beats w2 by 0.02
    assert [s.get("chosen") for s in result["stages"]] == ["w2-ddim", "w2-ddim", None, "w2-ddim-share0"]
    assert result["chosen"] == {"guidance_w": 2, "sampler": "ddim", "init": "noise", "strength": 0.5,
                                "synthetic_share": 0, "guidance_convention": "ho"}
    assert measured == ["copies", "w0.5-ddim", "w2-ddim", "w2-ddim-real0.5", "w2-ddim-translate0.5",
                        "w2-ddim-share0", "w2-ddim-share0.5"]  # share 1 is the centre itself: not measured again


def test_one_standard_error_rule_keeps_the_simpler_point(monkeypatch, tmp_path):
    """A better mean is not enough: the chosen point moves only when the paired advantage exceeds one SE."""
    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.sweep import SweepConfig, paired_margin

    splits = {"copies": [0.60, 0.62, 0.61, 0.63],
              "w0.5-ddim": [0.58, 0.60, 0.59, 0.61],  # worse than the copies
              "w2-ddim": [0.62, 0.63, 0.62, 0.64],  # +0.0125 ± SE 0.0025 over the copies: margin 5
              "w2-ddim-share0.5": [0.64, 0.62, 0.64, 0.63]}  # mean above w2, but +0.005 ± SE 0.0087: margin 0.58
    sweeper, _ = hand_sweeper(tmp_path, monkeypatch, splits)
    cfg = SweepConfig(method="cfg", guidance_w=(0.5, 2), samplers=("ddim",), synthetic_share=(0.5,))
    result = sweeper.run(cfg, MethodConfig(name="cfg", rebalancer="cfg"))
    guidance, share = result["stages"]
    assert guidance["chosen"] == "w2-ddim" and guidance["margins"]["w2-ddim"]["margin_se"] == pytest.approx(5.0)
    assert share["best"] == "w2-ddim-share0.5"  # the centre moves to the better mean …
    assert share["chosen"] == "w2-ddim"  # … but the choice stays: 0.58 SE is noise
    assert share["margins"]["w2-ddim-share0.5"]["margin_se"] == pytest.approx(0.5774, abs=1e-4)
    assert result["chosen_point"] == "w2-ddim" and result["chosen"]["synthetic_share"] == 1.0
    # exactly one SE does not beat; a hair more does; equal scores give margin 0
    one = paired_margin({"scores": [{"fold": k, "seed": 0, "score": v} for k, v in enumerate([1, 3])]},
                        {"scores": [{"fold": k, "seed": 0, "score": 0} for k in range(2)]})
    assert one["margin_se"] == pytest.approx(2.0) and one["beats"]
    same = paired_margin({"scores": [{"fold": 0, "seed": 0, "score": 0.5}]}, {"scores": [{"fold": 0, "seed": 0,
                                                                                          "score": 0.5}]})
    assert same["margin_se"] == 0 and not same["beats"]
    edge = paired_margin({"scores": [{"fold": k, "seed": 0, "score": v} for k, v in enumerate([0.0, 2.0])]},
                         {"scores": [{"fold": k, "seed": 0, "score": 0.0} for k in range(2)]})
    assert edge["margin_se"] == pytest.approx(1.0) and not edge["beats"]  # mean 1, SE 1: not more than one SE


def test_copies_stay_chosen_when_nothing_beats_them(monkeypatch, tmp_path):
    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.sweep import SweepConfig, tuned_params

    splits = {"copies": [0.60, 0.62, 0.61], "w1-ddim-real0.5": [0.61, 0.61, 0.62]}  # +0.0033 ± 0.0067
    sweeper, _ = hand_sweeper(tmp_path, monkeypatch, splits)
    cfg = SweepConfig(method="cfg", guidance_w=(1,), samplers=("ddim",), also=("cfg-ff",))
    result = sweeper.run(cfg, MethodConfig(name="cfg", rebalancer="cfg", params={"init": "real"}))
    assert result["chosen_point"] == "copies" and result["best_point"] == "w1-ddim-real0.5"
    assert result["chosen"] == {"synthetic_share": 0.0}  # all copies: oversampling itself
    assert tuned_params({"sweeps": [result]}) == {"cfg": {"synthetic_share": 0.0}, "cfg-ff": {"synthetic_share": 0.0}}


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
    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.sweep import SweepConfig

    assert (0.69 + 0.65) / 2 != (0.68 + 0.66) / 2
    sweeper, _ = hand_sweeper(tmp_path, monkeypatch, {"copies": [0.5, 0.5], "w1-ddim-real0.5": [0.69, 0.65],
                                                      "w1-ddim-real0.25": [0.68, 0.66]})
    cfg = SweepConfig(method="cfg", guidance_w=(1,), samplers=("ddim",), strength=(0.25,))
    result = sweeper.run(cfg, MethodConfig(name="cfg", rebalancer="cfg", params={"init": "real"}))
    assert result["best_point"] == "w1-ddim-real0.5"  # the tie keeps the centre so far
    assert result["chosen_point"] == "w1-ddim-real0.5"  # and the tie is no advantage over it


def test_the_levers_are_stages_with_their_zero_points(monkeypatch, tmp_path):
    """strength_max (real/translate starts), soft-label γ (translate only), swap share: stages of the same search,
    the training levers going to the recipe; a chosen lever reaches the method's params or train."""
    from diffbalance.experiment.config import MethodConfig
    from diffbalance.experiment.sweep import SweepConfig, apply_tuning

    flat = {"copies": 0.5, "w1-ddim-translate0.5": 0.6, "w1-ddim-translate0.5-1": 0.7,
            "w1-ddim-translate0.5-1-soft1": 0.8, "w1-ddim-translate0.5-1-soft1-swap0.5": 0.9}
    sweeper, measured = hand_sweeper(tmp_path, monkeypatch, {k: [v, v + 0.01, v - 0.01] for k, v in flat.items()})
    cfg = SweepConfig(method="cfg", guidance_w=(1,), samplers=("ddim",), strength_max=(0.25, 1.0),
                      soft_label_gamma=(1.0,), swap_share=(0.5,))
    method = MethodConfig(name="cfg", rebalancer="cfg", params={"init": "translate"})
    result = sweeper.run(cfg, method)
    assert measured == list(flat)  # strength_max 0.25 lies below the strength 0.5: no point
    assert result["chosen_point"] == "w1-ddim-translate0.5-1-soft1-swap0.5"
    assert result["chosen"]["strength_max"] == 1.0 and result["chosen"]["soft_label_gamma"] == 1.0
    (tuned,) = apply_tuning([method], {"sweeps": [result]})
    assert tuned.params["strength_max"] == 1.0 and tuned.params["init"] == "translate"
    assert (tuned.train.soft_label_gamma, tuned.train.swap_share) == (1.0, 0.5)
    # from noise there is nothing to translate or to range: those stages are skipped
    sweeper, _ = hand_sweeper(tmp_path, monkeypatch, {"copies": [0.5, 0.5], "w1-ddim": [0.6, 0.61]})
    result = sweeper.run(SweepConfig(method="cfg", guidance_w=(1,), samplers=("ddim",), strength_max=(1.0,),
                                     soft_label_gamma=(1.0,)), MethodConfig(name="cfg", rebalancer="cfg"))
    assert [s.get("skipped") for s in result["stages"][1:]] == ["the centre so far starts from noise",
                                                                "the centre so far translates no image"]


def test_a_sweep_of_the_swap_share_end_to_end(tmp_path):
    config = tiny_config(
        tmp_path, methods=["oversample", {"name": "cfg", "rebalancer": "cfg", "params": {**CFG, "init": "real"}}],
        seeds=[0], validation={"folds": 2}, train={"epochs": 1, "batch_size": 8},
        sweep={"method": "cfg", "guidance_w": [1], "swap_share": [0.5], "strength_max": [1.0], "seeds": [0],
               "train": {"epochs": 1}})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    (sweep,) = json.loads((out / "results.json").read_text())["sweep"]["sweeps"]
    assert list(sweep["points"]) == ["copies", "w1-ddim-real0.5", "w1-ddim-real0.5-1",
                                     sweep["stages"][2]["points"][0]]
    swap = sweep["points"][sweep["stages"][2]["points"][0]]
    assert swap["swap_share"] == 0.5 and swap["folder"].endswith("real0.5" if swap["strength_max"] is None else "-1")
