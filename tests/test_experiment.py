"""The runner and the CLI end to end on a tiny image folder (seconds, CPU), and the bad inputs of issue 2."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from diffbalance.cli.main import main
from diffbalance.data.image_folder import write_image_folder
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.experiment.config import ExperimentConfig, load_config


def tiny_folder(root: Path, per_class=(12, 12, 12), size=8) -> Path:
    """Three visibly different classes (dark, bright, striped) so a tiny CNN can learn them."""
    gen = torch.Generator().manual_seed(0)
    images, labels = [], []
    for c, n in enumerate(per_class):
        base = torch.full((n, 3, size, size), [40, 200, 120][c], dtype=torch.float32)
        if c == 2:
            base[:, :, ::2] = 10
        noise = torch.randint(-20, 21, base.shape, generator=gen)
        images.append((base + noise).clamp(0, 255).to(torch.uint8))
        labels += [c] * n
    data = ImageSet(torch.cat(images), torch.tensor(labels), ("dark", "bright", "striped"), "tiny")
    write_image_folder(data, root)
    return root


def tiny_config(tmp_path: Path, **overrides) -> Path:
    folder = tiny_folder(tmp_path / "images")
    cfg = {
        "name": "tiny",
        "data": {"name": "folder", "root": str(folder), "image_size": 8, "test_fraction": 0.25, "cache": False},
        "imbalance": {"profile": "linear", "n_min": 3},
        "methods": ["none", "oversample", "mixup", "cutmix",
                    {"name": "balanced-softmax", "rebalancer": "none", "train": {"loss": "balanced_softmax"}}],
        "classifiers": ["small_cnn"],
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0.5},
        "seeds": [0, 1],
        "consistency": False,
        **overrides,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_run_end_to_end(tmp_path, capsys):
    config = tiny_config(tmp_path)
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["train_counts"] == [3, 6, 9]
    assert results["dataset"]["images_to_add"] == [6, 3, 0]
    assert results["dataset"]["test_count"] == 9
    assert len(results["runs"]) == 5 * 2
    for run in results["runs"]:
        assert {"method", "classifier", "seed", "accuracy", "balanced_accuracy", "macro_f1", "per_class_f1",
                "train_seconds", "device"} <= set(run)
        assert 0 <= run["accuracy"] <= 1 and len(run["per_class_f1"]) == 3
    assert {"config", "versions"} <= set(results)
    assert json.loads((out / "config.resolved.json").read_text())["name"] == "tiny"
    report = (out / "report.md").read_text()
    assert "## Test accuracy (%)" in report and "balanced-softmax" in report and " ± " in report
    assert (out / "figures" / "fills_mixup.png").is_file() and (out / "figures" / "per_class_f1_small_cnn.png").is_file()
    assert len(list((out / "fills" / "cutmix").rglob("*.png"))) == 9
    assert "Test accuracy" in capsys.readouterr().out


def test_rerun_resumes_finished_runs(tmp_path):
    config = tiny_config(tmp_path, methods=["none"], seeds=[0])
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    first = json.loads((out / "results.json").read_text())["runs"]
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    assert json.loads((out / "results.json").read_text())["runs"] == first  # not retrained


def run_cli(args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, ""


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c.update(methods=["smote"]), "unknown rebalancer"),
    (lambda c: c.update(data={**c["data"], "name": "mnist"}), "unknown dataset"),
    (lambda c: c.update(imbalance={"profile": "zigzag"}), "unknown profile 'zigzag' at imbalance.profile"),
    (lambda c: c.update(colour="blue"), "unknown top level key(s) colour"),
    (lambda c: c.update(sampling_strategy={"dark": 1}), "below its current"),
    (lambda c: c.update(data={**c["data"], "root": "/nonexistent/folder"}), "/nonexistent/folder"),
    (lambda c: c.update(imbalance={"profile": "linear", "n_min": 50}), "only"),
])
def test_bad_inputs_give_one_line_errors_and_exit_2(tmp_path, capsys, mutate, match):
    path = tiny_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg))
    code, _ = run_cli(["run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert match in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_malformed_yaml_and_missing_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [none\n")
    assert run_cli(["run", str(bad), "--out", str(tmp_path / "o")])[0] == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert run_cli(["run", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])[0] == 2
    assert "not found" in capsys.readouterr().err


def test_unwritable_output_folder(tmp_path, capsys):
    config = tiny_config(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli(["run", str(config), "--out", str(blocker / "run"), "--quiet"])[0] == 2
    assert "not writable" in capsys.readouterr().err


def test_empty_class_folder_is_an_error(tmp_path, capsys):
    config = tiny_config(tmp_path)
    for f in (tmp_path / "images" / "striped").iterdir():
        f.unlink()
    assert run_cli(["run", str(config), "--out", str(tmp_path / "o"), "--quiet"])[0] == 2
    assert "has no images" in capsys.readouterr().err


def test_presets_parse_and_cover_the_paper():
    demo = load_config("demo")
    assert demo.data.name == "fashion-mnist" and demo.imbalance.n_min == 40
    # the demo compares oversample / balanced-softmax / a cfg method tuned on cross-validation folds, 3 seeds
    assert demo.validation.folds == 2 and demo.sweep[0].method == "cfg"
    assert {"none", "oversample", "cfg"} <= {m.rebalancer for m in demo.methods} and len(demo.seeds) >= 3
    assert demo.validation is not None and demo.sweep is not None
    paper = load_config("paper-cifar10")
    assert paper.imbalance.n_min == 500 and set(paper.classifiers) == {"resnet18", "resnet50"}
    assert {"mixup", "cutmix", "cfg", "ldm", "ldm-img2img"} <= {m.rebalancer for m in paper.methods}
    assert ExperimentConfig.from_dict(paper.to_dict()) == paper  # round trip
    quick = load_config("paper-cifar10-quick")
    assert quick.classifiers == ("resnet18",) and len(quick.seeds) == 1 and quick.ceiling and paper.ceiling
    assert {m.rebalancer for m in paper.methods} - {"ldm-img2img"} <= {m.rebalancer for m in quick.methods}
    assert {m.name for m in quick.methods} >= {"balanced-softmax", "batch-mixup-cutmix", "oversample"}


def test_gpu_presets_train_with_the_fast_recipe():
    from diffbalance.classify.config import FAST_RECIPE

    for name in ("paper-cifar10", "paper-cifar10-quick"):
        recipe = load_config(name).train.to_dict()
        assert {k: recipe[k] for k in FAST_RECIPE} == FAST_RECIPE, name
    smoke = load_config("paper-cifar10-smoke")  # the same recipe, fewer epochs (and its warmup shortened)
    recipe = smoke.train.to_dict()
    assert {k: recipe[k] for k in FAST_RECIPE if k not in ("epochs", "warmup_epochs")} == \
        {k: v for k, v in FAST_RECIPE.items() if k not in ("epochs", "warmup_epochs")}
    assert smoke.ceiling and smoke.fid.features == "inception" and {"oversample", "mixup", "cutmix", "cfg"} <= \
        {m.rebalancer for m in smoke.methods}


def test_duplicate_method_names_rejected():
    with pytest.raises(DiffbalanceError, match="repeat"):
        ExperimentConfig.from_dict({"methods": ["none", "none"]})


def test_fid_cli_reads_a_runs_rebalanced_set(tmp_path, capsys):
    from diffbalance.experiment.image_sets import load_image_set
    from diffbalance.experiment.stage import load_rebalanced

    config = tiny_config(tmp_path, methods=["none", "cutmix"], seeds=[0], consistency=True, reference_images_per_class=6)
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    rebalanced = load_image_set(f"{out}@cutmix")
    assert rebalanced.counts() == [9, 9, 9]
    assert load_rebalanced(out, "none").counts() == [3, 6, 9]
    with pytest.raises(DiffbalanceError, match="no method"):
        load_rebalanced(out, "ldm")
    json_out = tmp_path / "fid.json"
    main(["fid", f"{out}@cutmix", f"{out}@none", "--features", "random", "--device", "cpu", "--json", str(json_out)])
    result = json.loads(json_out.read_text())
    assert result["n_a"] == 27 and result["n_b"] == 18 and result["fid"] >= 0
    # domain-FID from the command line, with the reference classifier the run saved
    main(["fid", f"{out}@cutmix", f"{out}@none", "--features", "domain", "--domain-classifier",
          str(out / "reference-classifier"), "--device", "cpu", "--json", str(json_out)])
    result = json.loads(json_out.read_text())
    assert result["features"].startswith("domain-FID (not Inception FID)") and result["fid"] >= 0
    assert run_cli(["fid", f"{out}@cutmix", f"{out}@none", "--features", "domain"])[0] == 2
    assert "--domain-classifier" in capsys.readouterr().err
    assert run_cli(["fid", f"{out}@cutmix", f"{out}@none", "--features", "domain", "--domain-classifier",
                    str(tmp_path / "nowhere")])[0] == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\n" not in err.strip()


def test_ceiling_row_trains_on_the_balanced_set_and_is_never_chosen(tmp_path):
    config = tiny_config(tmp_path, methods=["none", "oversample"], seeds=[0, 1], ceiling=True,
                         validation={"per_class": 1, "seed": 0})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    ceiling = [r for r in results["runs"] if r["method"] == "balanced-ceiling"]
    assert len(ceiling) == 2 and all(r["ceiling"] for r in ceiling)
    # the whole balanced train split (9 per class after the test split) less the 3 validation images
    assert ceiling[0]["train_images"] == 3 * 9 - 3
    from diffbalance.report.verdict import best_by_validation

    best_ceiling = [{**r, "validation": {"accuracy": 2.0}} for r in ceiling]  # even when it scores best
    assert best_by_validation(results["runs"] + best_ceiling, "small_cnn", False) in ("none", "oversample")
    assert "balanced-ceiling" in (out / "report.md").read_text()
