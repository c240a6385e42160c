import pytest

from diffbalance.classify.config import FAST_RECIPE, TrainConfig
from diffbalance.infra.errors import DiffbalanceError


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
        {"checkpoint_every_epochs": "never"},
        {"lr_reference_batch": -128},
        {"cutout": -1},
        {"ema_decay": 1.0},
        {"sync_batchnorm": "yes"},
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


def test_speed_options_default_to_todays_run_and_round_trip():
    cfg = TrainConfig()
    assert (cfg.lr_reference_batch, cfg.cutout, cfg.ema_decay, cfg.sync_batchnorm) == (0, 0, 0.0, False)
    fast = TrainConfig.from_dict({"lr_reference_batch": 128, "cutout": 8, "ema_decay": 0.999, "sync_batchnorm": True,
                                  "checkpoint_every_epochs": 5})
    assert TrainConfig.from_dict(fast.to_dict()) == fast


def test_checkpoint_every_auto_is_about_four_per_stage():
    auto = TrainConfig()
    assert auto.checkpoint_every_epochs == "auto" and TrainConfig.from_dict(auto.to_dict()) == auto
    assert [auto.checkpoint_every(n) for n in (1, 2, 4, 5, 30, 35)] == [1, 1, 1, 2, 8, 9]
    assert TrainConfig(checkpoint_every_epochs=3).checkpoint_every(30) == 3
    assert TrainConfig(checkpoint_every_epochs=0).checkpoint_every(30) == 0  # never


def test_fast_recipe_is_a_valid_config():
    cfg = TrainConfig.from_dict(FAST_RECIPE)
    assert cfg.batch_size == 512 and cfg.nesterov and cfg.label_smoothing > 0 and cfg.lr_reference_batch == 128
    assert TrainConfig.from_dict({**FAST_RECIPE, "model": "resnet18"}).model == "resnet18"
