"""ImageNet backbones by name (classify.backbones): timm/<model> and tv/<model> in the classifier registry, their
weights from a local safetensors file (no network here), their own normalisation and input size, and the
fine-tuning modes (full with a backbone lr factor, linear probe)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from diffbalance.classify.config import TrainConfig
from diffbalance.classify.models import build_classifier
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError

timm = pytest.importorskip("timm")


def tiny_set(n: int = 16, size: int = 12, channels: int = 3) -> ImageSet:
    labels = torch.arange(n) % 2
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 100, (n, channels, size, size), generator=g, dtype=torch.uint8)
    images[labels == 1] += 120
    return ImageSet(images, labels, ("dark", "bright"))


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A randomly initialised timm resnet18 (with its 1000-class fc) saved as timm saves weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(path))
    return path


def recipe(**kw) -> TrainConfig:
    return TrainConfig.from_dict({"model": "timm/resnet18", "input_size": 32, "epochs": 1, "batch_size": 8,
                                  "lr": 0.01, "warmup_epochs": 0, **kw}, path="train")


def backbone_state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}


def test_a_timm_backbone_loads_local_weights_and_keeps_its_stem(resnet18_file):
    model = build_classifier("timm/resnet18", 5, 3, pretrained=str(resnet18_file), input_size=32)
    saved = timm.create_model("resnet18", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay={"file": str(resnet18_file)})
    assert torch.equal(model.body.conv1.weight, saved.conv1.weight)  # the weights of the file
    assert model.body.conv1.stride == (2, 2) and model.body.conv1.kernel_size == (7, 7)  # the ImageNet stem
    assert model.head.out_features == 5 and model.feature_dim == 512
    assert model.normalization == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert model.forward_features(torch.randn(2, 3, 12, 12)).shape == (2, 512)  # resized to 32 inside
    grey = build_classifier("timm/resnet18", 5, 1, input_size=32)
    assert grey.body.conv1.in_channels == 1 and len(grey.normalization[0]) == 1


def test_a_linear_probe_trains_the_head_alone(resnet18_file):
    data = tiny_set()
    before = build_classifier("timm/resnet18", 2, 3, pretrained=str(resnet18_file), input_size=32)
    clf = train_classifier(data, recipe(pretrained=str(resnet18_file), finetune="linear-probe",
                                        random_crop_padding=0), device="cpu", seed=0, progress=False)
    after = backbone_state(clf.model)
    assert all(torch.equal(after[k], v) for k, v in backbone_state(before).items())  # BN statistics too
    assert clf.mean == [0.485, 0.456, 0.406]  # the backbone's normalisation, not the set's
    assert not torch.equal(clf.model.head.weight, before.head.weight)


def test_full_fine_tuning_scales_the_backbone_lr(resnet18_file):
    data = tiny_set()
    frozen = train_classifier(data, recipe(pretrained=str(resnet18_file), backbone_lr_factor=0.0, weight_decay=0.0),
                              device="cpu", seed=0, progress=False)
    moved = train_classifier(data, recipe(pretrained=str(resnet18_file), backbone_lr_factor=0.5), device="cpu",
                             seed=0, progress=False)
    start = build_classifier("timm/resnet18", 2, 3, pretrained=str(resnet18_file), input_size=32)
    w0 = start.body.conv1.weight
    assert torch.equal(frozen.model.body.conv1.weight, w0) and not torch.equal(moved.model.body.conv1.weight, w0)


def test_torchvision_backbones_resolve_too():
    model = build_classifier("tv/resnet18", 3, 1, input_size=32)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3) and model.feature_dim == 512


@pytest.mark.parametrize("options, match", [
    ({"model": "timm/not_a_model"}, "unknown classifier 'timm/not_a_model' at train.model"),
    ({"model": "small_cnn", "pretrained": True}, "small_cnn trains from scratch"),
    ({"pretrained": False, "finetune": "linear-probe"}, "finetune must be full when pretrained is false"),
    ({"pretrained": True, "finetune": "linear-probe"}, "random_crop_padding 0, cutout 0 and batch_mix none"),
    ({"input_size": 8}, "input_size 8 is too small for timm/resnet18, which downsamples 32×"),
])
def test_bad_backbone_options_are_one_line(options, match):
    with pytest.raises(DiffbalanceError, match=match) as err:
        config = recipe(**options)
        build_classifier(config.model, 2, 3, pretrained=config.pretrained, input_size=config.input_size)
    assert "\n" not in str(err.value)


def test_bad_weights_are_one_line(tmp_path, resnet18_file):
    other = tmp_path / "resnet34.safetensors"
    save_file(timm.create_model("resnet34").state_dict(), str(other))
    with pytest.raises(DiffbalanceError, match="are not those of timm/resnet18"):
        build_classifier("timm/resnet18", 2, 3, pretrained=str(other), input_size=32)
    pickled = tmp_path / "resnet18.pth"
    pickled.write_bytes(b"not read")
    with pytest.raises(DiffbalanceError, match="not a safetensors file .* pickled checkpoints are never loaded"):
        build_classifier("timm/resnet18", 2, 3, pretrained=str(pickled))
    with pytest.raises(DiffbalanceError, match="no weights file at"):
        build_classifier("timm/resnet18", 2, 3, pretrained=str(tmp_path / "missing.safetensors"))


def test_absent_weights_offline_name_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(DiffbalanceError) as err:
        build_classifier("timm/resnet18", 2, 3, pretrained=True)
    text = str(err.value)
    assert "not in the Hugging Face cache" in text and "empty-cache" in text and "pretrained: PATH" in text


def test_head_then_full_keeps_the_backbone_for_its_head_epochs(resnet18_file):
    """Epoch 1 trains the head alone (the backbone's lr 0); epoch 2 every layer."""
    data = tiny_set()
    options = {"pretrained": str(resnet18_file), "finetune": "head-then-full", "weight_decay": 0.0}
    start = build_classifier("timm/resnet18", 2, 3, pretrained=str(resnet18_file), input_size=32).body.conv1.weight
    one = train_classifier(data, recipe(**options, epochs=2, head_epochs=1), device="cpu", seed=0, progress=False)
    assert not torch.equal(one.model.body.conv1.weight, start)
    from diffbalance.classify.schedule import lr_scheduler

    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.05},  # the backbone (lr × factor)
              {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1}]  # the head: the last group
    opt = torch.optim.SGD(groups, lr=0.1)
    sched = lr_scheduler(opt, schedule="cosine", warmup_steps=0, total_steps=6, frozen_steps=3)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [b for b, _ in seen[:3]] == [0.0] * 3 and all(b > 0 for b, _ in seen[3:5])
    assert all(h > 0 for _, h in seen[:5]) and seen[3][0] / seen[3][1] == pytest.approx(0.5)
    json.dumps(sched.state_dict()["lr_lambdas"])  # plain JSON, as every checkpointed scheduler
    with pytest.raises(DiffbalanceError, match="head_epochs"):
        recipe(**options, epochs=2, head_epochs=2)


def test_the_fid_inception_backbone_takes_small_inputs_and_grey_images():
    model = build_classifier("inception-v3-fid", 3, 1, input_size=75).eval()  # random init: shapes only
    with torch.inference_mode():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3) and model.feature_dim == 2048
    assert model.normalization == ((0.5,), (0.5,))  # the network's x/127.5 − 1
    with pytest.raises(DiffbalanceError, match="input_size 64 is too small for inception-v3-fid"):
        build_classifier("inception-v3-fid", 3, 3, input_size=64)


def test_the_fid_inception_backbone_gives_the_fid_features():
    """Its weights are the FID TorchScript's, mapped onto blocks that take any size: at 299 px its pool3 features
    are the FID extractor's."""
    from diffbalance.evaluate.fid.features import load_inception, resolve_inception_weights

    weights, _ = resolve_inception_weights()
    if weights is None:
        pytest.skip("no FID Inception weights (../shared/data/fid-inception or $DIFFBALANCE_FID_WEIGHTS)")
    images = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    expected = load_inception(weights, "cpu", batch_size=2)(images)
    model = build_classifier("inception-v3-fid", 2, 3, pretrained=True).eval()
    with torch.inference_mode():
        ours = model.forward_features((images.float() / 255 - 0.5) / 0.5)
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-3)


def test_a_linear_probe_runs_the_backbone_once_per_image(resnet18_file):
    """Every later epoch, seed and prediction reads the kept features: the body sees each input (and its flip) once."""
    from diffbalance.classify.feature_memo import MEMO

    MEMO.clear()
    data = tiny_set()
    seen = []
    config = recipe(pretrained=str(resnet18_file), finetune="linear-probe", random_crop_padding=0, epochs=3,
                    horizontal_flip=False)
    first = train_classifier(data, config, device="cpu", seed=0, progress=False)
    hook = first.model.body.register_forward_hook(lambda m, inputs, out: seen.append(len(inputs[0])))
    first.predict(data.images)
    assert seen == [] and MEMO.misses == len(data)  # 3 epochs and a prediction: the backbone ran 16 times
    other = train_classifier(data, config, device="cpu", seed=1, progress=False)
    assert MEMO.misses == len(data) and not torch.equal(other.model.head.weight, first.model.head.weight)
    hook.remove()
    MEMO.clear()


def test_the_feature_memo_keeps_what_its_budget_allows():
    from diffbalance.classify.feature_memo import FeatureMemo

    memo = FeatureMemo(budget_bytes=3 * 4 * 4)  # three 4-float features
    calls = []

    def compute(x):
        calls.append(len(x))
        return x.flatten(1)[:, :4] * 2

    x = torch.arange(5 * 8, dtype=torch.float32).view(5, 8)
    torch.testing.assert_close(memo.features("a", x, compute), x[:, :4] * 2)
    assert calls == [5] and memo.bytes == 48  # the two least recent left
    memo.features("a", x[3:], compute)
    assert calls == [5] and memo.hits == 2  # the last three are kept
    memo.features("b", x[3:], compute)
    assert calls == [5, 2]  # another backbone: never the same entry


def test_a_run_probes_the_fid_inception(tmp_path):
    """A study's classifier can be the frozen FID Inception (issue 27's CPU study): a run with two methods and two
    seeds on a tiny folder, the features of every image computed once for the whole run."""
    import yaml

    from diffbalance.classify.feature_memo import MEMO
    from diffbalance.cli.main import main
    from diffbalance.evaluate.fid.features import resolve_inception_weights

    if resolve_inception_weights()[0] is None:
        pytest.skip("no FID Inception weights (../shared/data/fid-inception or $DIFFBALANCE_FID_WEIGHTS)")
    from test_image_sizes import write_folder

    data = write_folder(tmp_path / "d", {"a": 8, "b": 4}, size=(16, 16))
    config = {"name": "probe", "data": {"name": "folder", "root": str(data), "test_fraction": 0.25, "cache": False},
              "methods": ["oversample", {"name": "bs", "rebalancer": "none", "train": {"loss": "balanced_softmax"}}],
              "classifiers": ["inception-v3-fid"], "seeds": [0, 1],
              "train": {"pretrained": True, "input_size": 75, "finetune": "linear-probe", "random_crop_padding": 0,
                        "horizontal_flip": False, "epochs": 2, "batch_size": 4, "lr": 0.05, "warmup_epochs": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    MEMO.clear()
    main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"])
    runs = json.loads((tmp_path / "run" / "results.json").read_text())["runs"]
    assert {(r["method"], r["classifier"]) for r in runs} == {("oversample", "inception-v3-fid"),
                                                             ("bs", "inception-v3-fid")}
    assert MEMO.misses <= 12 and MEMO.hits > MEMO.misses  # 12 images in all: each through the network once
    MEMO.clear()


def test_a_run_compares_a_cnn_and_a_probe_each_with_its_own_recipe(tmp_path, resnet18_file):
    """`classifiers:` takes {name, model, train}: one run trains the CIFAR-stem CNN from scratch and a frozen timm
    backbone as a linear probe on the same fills, each with its recipe; a backbone's '/' stays out of folder names."""
    import yaml

    from diffbalance.classify.feature_memo import MEMO
    from diffbalance.cli.main import main
    from diffbalance.experiment.config import load_config
    from test_image_sizes import write_folder

    data = write_folder(tmp_path / "d", {"a": 8, "b": 4}, size=(16, 16))
    probe = {"name": "probe", "model": "timm/resnet18",
             "train": {"pretrained": str(resnet18_file), "input_size": 32, "finetune": "linear-probe",
                       "random_crop_padding": 0, "horizontal_flip": False}}
    config = {"name": "two", "data": {"name": "folder", "root": str(data), "test_fraction": 0.25, "cache": False},
              "methods": ["oversample"], "classifiers": ["small_cnn", probe, "timm/resnet18"], "seeds": [0],
              "train": {"epochs": 1, "batch_size": 4, "lr": 0.05, "warmup_epochs": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    MEMO.clear()
    main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"])
    runs = json.loads((tmp_path / "run" / "results.json").read_text())["runs"]
    assert [r["classifier"] for r in runs] == ["small_cnn", "probe", "timm/resnet18"]
    assert MEMO.misses > 0  # the probe's features were kept: its recipe (linear-probe) was the one it trained with
    assert {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()} >= {
        "oversample--small_cnn--seed0", "oversample--probe--seed0", "oversample--timm+resnet18--seed0"}
    saved = load_config(tmp_path / "run" / "config.resolved.json")
    assert saved.run_recipe(saved.methods[0].train, "probe").finetune == "linear-probe"
    assert saved.run_recipe(saved.methods[0].train, "small_cnn").finetune == "full"
    MEMO.clear()
    clash = {**config, "classifiers": ["small_cnn", {"model": "small_cnn", "train": {"epochs": 2}}]}
    (tmp_path / "clash.yaml").write_text(yaml.safe_dump(clash))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "clash.yaml"), "--out", str(tmp_path / "run2"), "--quiet", "--device", "cpu"])
    assert exit_info.value.code == 2 and not (tmp_path / "run2").exists()
