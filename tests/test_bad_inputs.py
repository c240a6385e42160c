"""Bad input across every command: exit code 2, exactly one line `error: … — fix: …` on stderr, no traceback, and
the output folder (or --json file) exactly as it was before the command — absent stays absent, and an existing run
folder is left byte for byte."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config, tiny_folder  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402

RUN_EDITS = {  # name → how the tiny run config is spoiled
    "classifiers as a scalar": {"classifiers": "small_cnn"},
    "methods as a mapping": {"methods": {"none": 1}},
    "seeds as a scalar": {"seeds": 5},
    "n_min not a number": {"imbalance": {"profile": "linear", "n_min": "abc"}},
    "unknown top-level key": {"colour": "blue"},
    "unknown method": {"methods": ["smote"]},
    "method parameter type": {"methods": [{"name": "m", "rebalancer": "mixup", "params": {"alpha": "x"}}]},
    "negative alpha": {"methods": [{"name": "m", "rebalancer": "mixup", "params": {"alpha": -1}}]},
    "batch_size 0 in a method": {"methods": [{"name": "m", "rebalancer": "cutmix", "params": {"batch_size": 0}}]},
    "negative guidance": {"methods": [{"name": "c", "rebalancer": "cfg", "params": {"guidance_w": -3}}]},
    "cfg steps 0": {"methods": [{"name": "c", "rebalancer": "cfg", "params": {"num_inference_steps": 0}}]},
    "cfg steps above T": {"methods": [{"name": "c", "rebalancer": "cfg", "params": {"num_inference_steps": 100000}}]},
    "cfg unknown sampler": {"methods": [{"name": "c", "rebalancer": "cfg", "params": {"sampler": "heun"}}]},
    "cfg train option type": {"methods": [{"name": "c", "rebalancer": "cfg", "params": {"train": {"lr": "x"}}}]},
    "cfg checkpoint missing": {"methods": [{"name": "c", "rebalancer": "cfg", "params": {"checkpoint": "/nowhere"}}]},
    "ldm model unreachable": {"methods": [{"name": "l", "rebalancer": "ldm", "params": {"model": "no-one/no-model"}}]},
    "fid unknown features": {"fid": {"features": "pixels"}},
    "fid misspelled key": {"fid": {"batchsize": 3}},
    "reference_train misspelled key": {"reference_train": {"epochz": 3}},
    "negative lr": {"train": {"lr": -1}},
    "train as a list": {"train": [1, 2]},
    "target below a count": {"sampling_strategy": {"dark": 1}},
    "target word": {"sampling_strategy": "most"},
    "target ratio above 1": {"sampling_strategy": 1.5},
    "target not a number": {"sampling_strategy": {"dark": "many"}},
    "target beyond memory": {"sampling_strategy": {"dark": 1e15}},
    "unknown dataset": {"data": {"name": "mnist"}},
    "data root missing": {"data": {"name": "folder", "root": "/nonexistent/folder"}},
    "unknown profile": {"imbalance": {"profile": "zigzag"}},
    "profile beyond the data": {"imbalance": {"profile": "linear", "n_min": 50}},
    "ratio on linear": {"imbalance": {"profile": "linear", "n_min": 3, "ratio": 5}},
    "image_size beyond memory": {"data": {"name": "folder", "root": "{images}", "image_size": 200000}},
    "device name": {"device": "gpu"},
    "duplicate method names": {"methods": ["none", "none"]},
    "sampling_strategy per method": {"methods": [{"name": "m", "rebalancer": "mixup",
                                                  "params": {"sampling_strategy": "auto"}}]},
    "fill_seed as text": {"fill_seed": "zero"},
    "grid images negative": {"grid_images_per_class": -1},
}


def digest(path: Path) -> str | None:
    """A hash of everything under `path` (names and bytes), None when it does not exist."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        h.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Everything the cases point at: a tiny image folder and config, odd files, odd generator folders."""
    from diffusers import UNet2DModel

    tmp = tmp_path_factory.mktemp("bad")
    paths = {"tmp": tmp, "config": tiny_config(tmp), "images": tmp / "images", "out": tmp / "out"}
    paths["file"] = tmp / "a-file.txt"
    paths["file"].write_text("not a folder")
    paths["binary"] = tmp / "binary.yaml"
    paths["binary"].write_bytes(bytes(range(256)) * 4)
    paths["list_yaml"] = tmp / "list.yaml"
    paths["list_yaml"].write_text("- a\n- b\n")
    paths["bad_yaml"] = tmp / "bad.yaml"
    paths["bad_yaml"].write_text("methods: [none\n")
    empty = tiny_folder(tmp / "with-empty")
    for f in (empty / "striped").iterdir():
        f.unlink()
    paths["with_empty"] = empty
    broken = tiny_folder(tmp / "with-broken")
    (broken / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths["with_broken"] = broken
    uncond = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=8,
                         down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, layers_per_block=1)
    uncond.save_pretrained(tmp / "uncond")
    paths["uncond"] = tmp / "uncond"
    corrupt = tmp / "corrupt-generator"
    (corrupt / "unet").mkdir(parents=True)
    for f in (tmp / "uncond").iterdir():
        (corrupt / "unet" / f.name).write_bytes(f.read_bytes())
    (corrupt / "unet" / "generator.json").write_text("{broken")
    paths["corrupt"] = corrupt
    return paths


def run_config(world, edits: dict) -> Path:
    cfg = yaml.safe_load(world["config"].read_text())
    text = json.dumps(edits).replace("{images}", str(world["images"]))
    cfg.update(json.loads(text))
    path = world["tmp"] / f"edited-{hashlib.sha1(text.encode()).hexdigest()[:8]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cases() -> list[tuple[str, list[str]]]:
    """(id, argv with {placeholders}); every case must end in exit 2 with one line."""
    r = ["rebalance", "{images}", "--out", "{out}", "--image-size", "8"]
    cfg = ["rebalance", "{images}", "--out", "{out}", "--image-size", "8", "--method", "cfg", "--params"]
    out = [
        ("rebalance: missing folder", ["rebalance", "/nonexistent", "--method", "mixup", "--out", "{out}"]),
        ("rebalance: a file as folder", ["rebalance", "{file}", "--method", "mixup", "--out", "{out}"]),
        ("rebalance: empty class folder", ["rebalance", "{with_empty}", "--method", "mixup", "--out", "{out}"]),
        ("rebalance: unknown method", [*r, "--method", "smote"]),
        ("rebalance: corrupt image with --on-corrupt error", ["rebalance", "{with_broken}", "--method", "mixup",
                                                              "--out", "{out}", "--on-corrupt", "error"]),
        ("rebalance: unknown --on-corrupt", [*r, "--method", "mixup", "--on-corrupt", "ignore"]),
        ("rebalance: target value not a number", [*r, "--method", "mixup", "--sampling-strategy", '{"dark": "many"}']),
        ("rebalance: target unknown class", [*r, "--method", "mixup", "--sampling-strategy", '{"zebra": 9}']),
        ("rebalance: target below count", [*r, "--method", "mixup", "--sampling-strategy", '{"dark": 1}']),
        ("rebalance: target ratio 1.5", [*r, "--method", "mixup", "--sampling-strategy", "1.5"]),
        ("rebalance: target word", [*r, "--method", "mixup", "--sampling-strategy", "most"]),
        ("rebalance: target 1e30", [*r, "--method", "mixup", "--sampling-strategy", '{"dark": 1e30}']),
        ("rebalance: params a list", [*r, "--method", "mixup", "--params", "[1]"]),
        ("rebalance: params bad JSON", [*r, "--method", "mixup", "--params", "{bad"]),
        ("rebalance: alpha -1", [*r, "--method", "mixup", "--params", '{"alpha": -1}']),
        ("rebalance: alpha text", [*r, "--method", "mixup", "--params", '{"alpha": "x"}']),
        ("rebalance: batch_size 0", [*r, "--method", "mixup", "--params", '{"batch_size": 0}']),
        ("rebalance: unknown parameter", [*r, "--method", "mixup", "--params", '{"beta": 1}']),
        ("rebalance: sampling_strategy in params", [*r, "--method", "mixup", "--params", '{"sampling_strategy": 1}']),
        ("rebalance: random_state in params", [*r, "--method", "mixup", "--params", '{"random_state": 1}']),
        ("rebalance: image size 200000", ["rebalance", "{images}", "--out", "{out}", "--method", "mixup",
                                          "--image-size", "200000"]),
        ("rebalance: image size 0", ["rebalance", "{images}", "--out", "{out}", "--method", "mixup", "--image-size",
                                     "0"]),
        ("rebalance: channels 2", [*r, "--method", "mixup", "--channels", "2"]),
        ("rebalance: device gpu", [*r, "--method", "mixup", "--device", "gpu"]),
        ("rebalance: seed text", [*r, "--method", "mixup", "--seed", "abc"]),
        ("rebalance: no --method", r),
        ("rebalance: unknown option", [*r, "--method", "mixup", "--colour", "red"]),
        ("rebalance: --out is a file", ["rebalance", "{images}", "--method", "mixup", "--out", "{file}/x"]),
        ("rebalance: cfg checkpoint missing", [*cfg, '{"checkpoint": "/nowhere"}']),
        ("rebalance: cfg unconditional UNet", [*cfg, '{"checkpoint": "{uncond}"}']),
        ("rebalance: cfg corrupt generator.json", [*cfg, '{"checkpoint": "{corrupt}"}']),
        ("rebalance: cfg negative guidance", [*cfg, '{"guidance_w": -3}']),
        ("rebalance: cfg sd guidance below 1", [*cfg, '{"guidance_w": 0.5, "guidance_convention": "sd"}']),
        ("rebalance: cfg steps 0", [*cfg, '{"num_inference_steps": 0}']),
        ("rebalance: cfg steps 100000", [*cfg, '{"num_inference_steps": 100000}']),
        ("rebalance: cfg unknown sampler", [*cfg, '{"sampler": "heun"}']),
        ("rebalance: cfg batch_size 0", [*cfg, '{"batch_size": 0}']),
        ("rebalance: cfg train lr text", [*cfg, '{"train": {"lr": "fast"}}']),
        ("rebalance: cfg unknown model size", [*cfg, '{"train": {"model_size": "huge"}}']),
        ("rebalance: ldm missing local folder", [*r, "--method", "ldm", "--params", '{"model": "/nowhere/model"}']),
        ("rebalance: ldm unreachable id", [*r, "--method", "ldm", "--params", '{"model": "no-one/no-model"}']),
        ("rebalance: ldm negative guidance", [*r, "--method", "ldm", "--params", '{"guidance_w": -2}']),
        ("rebalance: img2img strength 0", [*r, "--method", "ldm-img2img", "--params", '{"strength": 0}']),
        ("run: missing config", ["run", "{tmp}/missing.yaml", "--out", "{out}"]),
        ("run: malformed YAML", ["run", "{bad_yaml}", "--out", "{out}"]),
        ("run: binary config", ["run", "{binary}", "--out", "{out}"]),
        ("run: config is a list", ["run", "{list_yaml}", "--out", "{out}"]),
        ("run: --device cuda without CUDA", ["run", "{config}", "--out", "{out}", "--device", "cuda"]),
        ("run: --out below a file", ["run", "{config}", "--out", "{file}/run"]),
        ("run: unknown option", ["run", "{config}", "--out", "{out}", "--fast"]),
        ("make-lt: unknown profile", ["make-lt", "--profile", "zigzag", "--out", "{out}"]),
        ("make-lt: ratio on linear", ["make-lt", "--profile", "linear", "--ratio", "5", "--out", "{out}"]),
        ("make-lt: n-min on step", ["make-lt", "--profile", "step", "--n-min", "5", "--out", "{out}"]),
        ("make-lt: ratio below 1", ["make-lt", "--profile", "step", "--ratio", "0.5", "--out", "{out}"]),
        ("make-lt: unknown dataset", ["make-lt", "--profile", "linear", "--dataset", "mnist", "--out", "{out}"]),
        ("make-lt: profile beyond the data", ["make-lt", "--dataset", "folder", "--root", "{images}", "--image-size",
                                              "8", "--profile", "linear", "--n-min", "100", "--out", "{out}"]),
        ("make-lt: empty order item", ["make-lt", "--profile", "linear", "--order", "1,,2", "--out", "{out}"]),
        ("make-lt: folder without root", ["make-lt", "--profile", "linear", "--dataset", "folder", "--out", "{out}"]),
        ("make-lt: no --profile", ["make-lt", "--out", "{out}"]),
        ("train-generator: unknown size", ["train-generator", "--out", "{out}", "--size", "huge"]),
        ("train-generator: config a list", ["train-generator", "--out", "{out}", "--config", "[1]"]),
        ("train-generator: config lr text", ["train-generator", "--out", "{out}", "--config", '{"lr": "x"}']),
        ("train-generator: config unknown key", ["train-generator", "--out", "{out}", "--config", '{"lrate": 1}']),
        ("train-generator: p_uncond 1.5", ["train-generator", "--out", "{out}", "--config", '{"p_uncond": 1.5}']),
        ("train-generator: steps 0", ["train-generator", "--out", "{out}", "--steps", "0"]),
        ("train-generator: unknown profile", ["train-generator", "--out", "{out}", "--profile", "zigzag"]),
        ("train-generator: folder without root", ["train-generator", "--out", "{out}", "--dataset", "folder"]),
        ("train-generator: device gpu", ["train-generator", "--out", "{out}", "--device", "gpu"]),
        ("fid: missing folder", ["fid", "/nonexistent", "{images}"]),
        ("fid: bad split", ["fid", "cifar10:val", "{images}"]),
        ("fid: unknown features", ["fid", "{images}", "{images}", "--features", "pixels"]),
        ("fid: unknown resize", ["fid", "{images}", "{images}", "--resize", "nearest"]),
        ("fid: domain without classifier", ["fid", "{images}", "{images}", "--features", "domain"]),
        ("fid: domain classifier missing", ["fid", "{images}", "{images}", "--features", "domain",
                                            "--domain-classifier", "/nowhere"]),
        ("fid: batch size 0", ["fid", "{images}", "{images}", "--features", "random", "--batch-size", "0"]),
        ("fid: json below a file", ["fid", "{images}", "{images}", "--features", "random", "--json", "{file}/r.json"]),
        ("fid: run without the method", ["fid", "{tmp}@cfg", "{images}", "--features", "random"]),
        ("fid: missing argument", ["fid", "{images}"]),
        ("fid: corrupt image", ["fid", "{with_broken}", "{images}", "--features", "random"]),
        ("presets: unknown", ["presets", "nope"]),
        ("unknown command", ["frobnicate"]),
    ]
    out += [(f"run: {name}", ["run", f"{{edit:{name}}}", "--out", "{out}", "--quiet"]) for name in RUN_EDITS]
    return out


def fill_in(argv: list[str], world) -> list[str]:
    filled = []
    for arg in argv:
        if arg.startswith("{edit:"):
            filled.append(str(run_config(world, RUN_EDITS[arg[6:-1]])))
            continue
        for key, value in world.items():
            arg = arg.replace("{" + key + "}", str(value))
        filled.append(arg)
    return filled


CASES = cases()


def test_the_suite_is_large_enough():
    assert len(CASES) >= 60 and len({name for name, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name, argv", CASES, ids=[name for name, _ in CASES])
@pytest.mark.parametrize("out_exists", [False, True], ids=["new-out", "existing-out"])
def test_bad_input_is_one_line_exit_2_and_leaves_out_alone(world, capfd, name, argv, out_exists):
    if "--device" in argv and "cuda" in argv and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    if out_exists and "{out}" not in argv:
        pytest.skip("the command takes no --out")
    out = world["out"]
    if out_exists:  # a folder holding an earlier, finished piece of work must stay exactly as it is
        out.mkdir(exist_ok=True)
        (out / "earlier.json").write_text('{"kept": true}')
    before, json_before = digest(out), digest(world["file"])
    with pytest.raises(SystemExit) as exit_info:
        main(fill_in(argv, world))
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    try:
        assert exit_info.value.code == 2, captured.err
        assert len(lines) == 1 and lines[0].startswith("error: ") and " — fix: " in lines[0], captured.err
        assert "Traceback" not in captured.err + captured.out
        assert digest(out) == before and digest(world["file"]) == json_before
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
