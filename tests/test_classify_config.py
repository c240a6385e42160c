import pytest

from diffbalance.classify.config import TrainConfig
from diffbalance.errors import DiffbalanceError


def test_defaults_round_trip():
    cfg = TrainConfig()
    assert cfg.model == "small_cnn" and cfg.momentum == 0.9 and cfg.nesterov and cfg.weight_decay == 5e-4
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_from_dict_overrides_and_stores_floats():
    cfg = TrainConfig.from_dict(
        {"model": "resnet18", "epochs": 3, "lr": 1, "schedule": "onecycle", "loss": "balanced_softmax"}
    )
    assert cfg.model == "resnet18" and cfg.epochs == 3 and cfg.schedule == "onecycle"
    assert isinstance(cfg.lr, float) and cfg.to_dict()["lr"] == 1.0


@pytest.mark.parametrize(
    "bad",
    [
        {"learning_rate": 0.1},  # unknown key
        {"model": "vgg"},
        {"schedule": "step"},
        {"loss": "focal"},
        {"batch_mix": "mosaic"},
        {"epochs": 0},
        {"epochs": 2.5},
        {"batch_size": 1},
        {"lr": 0.0},
        {"lr": "fast"},
        {"momentum": 1.0},
        {"momentum": 0.0, "nesterov": True},
        {"nesterov": 1},
        {"weight_decay": -1e-4},
        {"warmup_epochs": 31},  # longer than the run (epochs 30)
        {"label_smoothing": 1.0},
        {"batch_mix_alpha": 0},
        {"random_crop_padding": -1},
        {"eval_batch_size": 0},
        {"checkpoint_every_epochs": -1},
    ],
)
def test_bad_config_is_a_one_line_error(bad):
    with pytest.raises(DiffbalanceError) as err:
        TrainConfig.from_dict(bad)
    assert "\n" not in str(err.value)


def test_one_epoch_with_the_default_warmup_is_valid():
    assert TrainConfig.from_dict({"epochs": 1}).warmup_epochs == 1.0


def test_not_a_mapping():
    with pytest.raises(DiffbalanceError):
        TrainConfig.from_dict(["epochs", 3])
