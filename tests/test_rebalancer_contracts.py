"""The contract every registered rebalancer keeps, run over `available_rebalancers()`: a plug-in added to the registry
is covered here with no edit — its tiny, CPU-fast parameters and one bad parameter are read from its registry entry
(`@register(tiny=..., bad=...)`, rebalance.base); a generative rebalancer without tiny parameters fails loudly
instead of skipping the contract.

For each: `fit_resample` keeps the inputs and appends the images `sampling_strategy` asks for (a dict honoured
exactly), in the inputs' shape and dtype, without NaN; the same seed gives the same bytes and another `random_state`
other images; `clone` round-trips the parameters; `__init__`/`set_params` store anything (scikit-learn's rule) and a
bad parameter is a one-line DiffbalanceError when the work starts, and from `build_rebalancer` with the config's key
path. Generative rebalancers run on tiny models: `cfg` on a 2-step generator (8/16 channels) trained once per module,
`ldm`/`ldm-img2img` on the tiny random Stable Diffusion of tests/tiny_sd.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import (check_do_not_raise_errors_in_init_or_set_params,
                                            check_get_params_invariance, check_no_attributes_set_in_init,
                                            check_set_params)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sd import save_tiny_sd  # noqa: E402

from diffbalance.data.imageset import ImageSet  # noqa: E402
from diffbalance.generate.cfg.config import CFGTrainConfig  # noqa: E402
from diffbalance.generate.cfg.train import train_generator  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402
from diffbalance.rebalance.base import REBALANCERS  # noqa: E402
from diffbalance.rebalance.registry import available_rebalancers, build_rebalancer, rebalancer_class  # noqa: E402

COUNTS = (6, 3, 2)  # images per class of the tiny training set
TARGET = {1: 5, 2: 4}  # dict sampling_strategy: class 1 up to 5 images, class 2 up to 4, class 0 untouched

def tiny_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 images (N, 8, 8, 3), COUNTS per class, class k brighter than class k−1."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(COUNTS)), COUNTS)
    X = np.clip(70 * y[:, None, None, None] + rng.integers(0, 90, (len(y), 8, 8, 3)), 0, 255).astype(np.uint8)
    return X, y


@pytest.fixture(scope="module")
def cfg_generator(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("cfg-generator")
    config = CFGTrainConfig(block_out_channels=(8, 16), num_train_timesteps=8, batch_size=8, checkpoint_every_steps=0,
                            train_steps=2)
    train_generator(ImageSet.from_arrays(*tiny_images())[0], config, out, "cpu", progress=False)
    return str(out)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> str:
    return str(save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd"))


def tiny_params(name: str, request: pytest.FixtureRequest) -> dict:
    """The entry's tiny parameters, each "fixture:NAME" value replaced by that fixture's value."""
    entry = REBALANCERS.entry(name)
    if rebalancer_class(name).generative and not entry.get("tiny"):
        pytest.fail(f"rebalancer {name!r} is registered without tiny parameters: give @register(tiny=...) the "
                    "CPU-fast parameters that let the contract cover it")
    params = {k: request.getfixturevalue(v.removeprefix("fixture:")) if str(v).startswith("fixture:") else v
              for k, v in entry.get("tiny", {}).items()}
    return {**params, "device": "cpu"}


def bad_param(name: str) -> dict:
    return REBALANCERS.entry(name).get("bad", {"batch_size": 0})


@pytest.fixture(params=available_rebalancers())
def name(request) -> str:
    return request.param


def test_every_registered_rebalancer_declares_a_bad_parameter_it_refuses():
    for name in available_rebalancers():
        (key, value), = bad_param(name).items()
        assert key in rebalancer_class(name)().get_params(), f"{name}: bad parameter {key!r} is not one of its own"


def test_fit_resample_appends_what_the_strategy_asks_in_the_inputs_shape(name, request, tmp_path):
    X, y = tiny_images()
    reb = build_rebalancer(name, tiny_params(name, request), sampling_strategy=TARGET)
    X_res, y_res = reb.fit_resample(X, y, workdir=tmp_path)
    added = {} if name == "none" else {1: TARGET[1] - COUNTS[1], 2: TARGET[2] - COUNTS[2]}
    assert reb.sampling_strategy_ == added
    assert np.bincount(y_res, minlength=3).tolist() == [n + added.get(c, 0) for c, n in enumerate(COUNTS)]
    assert X_res.shape == (len(y_res), 8, 8, 3) and X_res.dtype == np.uint8 and y_res.dtype == y.dtype
    assert np.array_equal(X_res[:len(X)], X) and np.array_equal(y_res[:len(y)], y)
    # float images in [0, 1] come back as float images in [0, 1], without NaN
    reb = build_rebalancer(name, tiny_params(name, request), sampling_strategy={2: 3})
    X_f, _ = reb.fit_resample(X.astype(np.float32) / 255, y, workdir=tmp_path)
    assert X_f.dtype == np.float32 and np.isfinite(X_f).all() and 0 <= X_f.min() and X_f.max() <= 1


def test_same_seed_same_bytes_another_seed_other_images(name, request, tmp_path):
    X, y = tiny_images()

    def new_images(seed: int) -> np.ndarray:
        reb = build_rebalancer(name, tiny_params(name, request), sampling_strategy=TARGET, random_state=seed)
        return reb.fit_resample(X, y, workdir=tmp_path)[0][len(X):]

    first = new_images(3)
    assert np.array_equal(first, new_images(3))
    if name == "none":
        assert len(first) == 0
    else:
        assert len(first) > 0 and not np.array_equal(first, new_images(4))


def test_clone_round_trips_the_parameters(name, request):
    reb = build_rebalancer(name, tiny_params(name, request))
    copy = clone(reb)
    assert type(copy) is type(reb) and copy.get_params() == reb.get_params() and copy is not reb
    assert copy.params() == reb.params()


def test_init_and_set_params_store_anything_sklearn_parameter_checks(name):
    cls = rebalancer_class(name)
    for check in (check_do_not_raise_errors_in_init_or_set_params, check_no_attributes_set_in_init,
                  check_get_params_invariance, check_set_params):
        check(name, cls())


def test_bad_parameter_is_one_line_error_at_fit_and_from_build(name, request, tmp_path):
    params = tiny_params(name, request)
    (key, value), = bad_param(name).items()
    reb = clone(build_rebalancer(name, params)).set_params(**{key: value})  # stored: no error yet
    with pytest.raises(DiffbalanceError, match=f"{key}=") as err:
        reb.fit_resample(*tiny_images(), workdir=tmp_path)
    assert "\n" not in str(err.value) and " — fix: " in str(err.value)
    with pytest.raises(DiffbalanceError, match=rf"methods\[3\]\.params\.{key}=") as err:
        build_rebalancer(name, {**params, key: value}, path="methods[3].params")
    assert "\n" not in str(err.value)
    with pytest.raises(DiffbalanceError, match=r"batch_size=0 is invalid"):  # the base's own check, every method
        clone(build_rebalancer(name, params)).set_params(batch_size=0).fit_resample(*tiny_images(), workdir=tmp_path)
