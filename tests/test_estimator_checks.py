"""scikit-learn's and imbalanced-learn's estimator checks on the non-generative rebalancers (none, oversample, mixup,
cutmix): a rebalancer is an imbalanced-learn sampler, so `clone`, pickle, `Pipeline`, `cross_val_score` and
`GridSearchCV` work, parameters are checked when the work starts (never in `__init__` or `set_params`), and bad
inputs are one-line `ValueError`s (DiffbalanceError).

Rebalancers take images; most checks feed tables, 2-D X (N, features) of arbitrary floats. Each rebalancer runs the
checks behind `Tabular`, a test-only subclass that reads the rows as N grayscale images 1×F (N×H×W) scaled to [0, 1]
by the table's min and max, scales the new rows back, and gives scikit-learn's `fit(X, y)` (a rebalancer's own `fit`
takes an ImageSet). Everything else — reading X and y, every check of them — is the rebalancer's own. Without the
wrapper scikit-learn runs no check at all: the rebalancers' tags say X is a 3-D/4-D image array, not a table.

Checks expected to fail (run as xfail, with the reason in EXPECTED_FAILURES), all because images are not tables:
  check_n_features_in, check_n_features_in_after_fitting   no `n_features_in_`: images have no feature count
  check_sampler_get_feature_names_out(_pandas)             no `get_feature_names_out`: pixels have no feature names
  check_dtype_object            object-dtype X is refused as "not a pixel type" (uint8, integers 0–255, floats [0, 1])
  check_estimators_empty_data_messages   0 samples is a ValueError (passes, and tested below), but 0 features
                                (12, 0) is refused as "images of 0 pixels", not in the tabular words it matches
  check_samplers_multiclass_ova  a one-hot y is refused (one label per image: y.argmax(1)), as multilabel y is
imbalanced-learn skips its sparse, pandas, string and NaN checks by the tags (dense numeric images without NaN);
scikit-learn skips check_array_api_input unless SCIPY_ARRAY_API=1 (the rebalancers claim no array API support).
The rest pass, among them: parameters (get/set_params, default construction, no attributes set in __init__, fit
does not overwrite them), clone, pickle, Pipeline, `check_do_not_raise_errors_in_init_or_set_params`, and input
validation (continuous, multilabel, one-class and None y; 1-D, NaN/inf, complex, sparse X; lists; column-vector y).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imblearn.base import is_sampler
from imblearn.pipeline import make_pipeline
from imblearn.utils.estimator_checks import parametrize_with_checks as imblearn_checks
from scipy.sparse import issparse
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks as sklearn_checks

from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.rebalance.mixing import CutMixFill, MixupFill
from diffbalance.rebalance.oversample import NoRebalance, RandomOversample
from diffbalance.rebalance.registry import build_rebalancer

NAMES = ("none", "oversample", "mixup", "cutmix")
IMAGES_ARE_NOT_TABLES = {
    "check_n_features_in": "images have no feature count: rebalancers set no n_features_in_",
    "check_n_features_in_after_fitting": "images have no feature count: rebalancers set no n_features_in_",
    "check_sampler_get_feature_names_out": "pixels have no feature names: no get_feature_names_out",
    "check_sampler_get_feature_names_out_pandas": "pixels have no feature names: no get_feature_names_out",
    "check_dtype_object": "object-dtype X is refused as not a pixel type (uint8, integers 0–255, floats in [0, 1])",
    "check_estimators_empty_data_messages": "0 features is refused as 'images of 0 pixels', not in sklearn's words",
    "check_samplers_multiclass_ova": "one label per image: a one-hot y is refused with a one-line error",
}


class Tabular:
    """Test-only: 2-D X (N, F) read as N grayscale images 1×F in [0, 1] (min-max of the table), new rows scaled back;
    anything else (1-D, sparse, empty) goes to the rebalancer as it is, which checks it."""

    def fit(self, X, y=None):
        if isinstance(X, ImageSet):  # the rebalancer's own fit, called by its fit_resample
            return super().fit(X, y)
        self.fit_resample(X, y)
        return self

    def fit_resample(self, X, y):
        rows = None if issparse(X) else np.asarray(X)
        if rows is None or rows.ndim != 2 or rows.size == 0 or rows.dtype.kind not in "fiub":
            return super().fit_resample(rows[:, None] if rows is not None and rows.ndim == 2 else X, y)
        lo = rows.min()
        span = (rows.max() - lo) or 1
        with np.errstate(invalid="ignore"):  # NaN and inf stay NaN: the rebalancer refuses them
            images = ((rows - lo) / span).astype(rows.dtype if rows.dtype.kind == "f" else np.float64)[:, None, :]
        X_img, y_res = super().fit_resample(images.tolist() if isinstance(X, list) else images, y)
        new = (np.asarray(X_img)[len(rows):, 0, :] * span + lo).astype(rows.dtype)
        X_res = np.concatenate([rows, new])
        return (X_res.tolist() if isinstance(X, list) else X_res), y_res

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


class TabularNone(Tabular, NoRebalance):
    pass


class TabularOversample(Tabular, RandomOversample):
    pass


class TabularMixup(Tabular, MixupFill):
    pass


class TabularCutMix(Tabular, CutMixFill):
    pass


TABULAR = [TabularNone(device="cpu"), TabularOversample(device="cpu"), TabularMixup(device="cpu"),
           TabularCutMix(device="cpu")]


def expected_failures(estimator) -> dict[str, str]:
    return IMAGES_ARE_NOT_TABLES


@sklearn_checks(TABULAR, expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@imblearn_checks(TABULAR, expected_failed_checks=expected_failures)
def test_imblearn_sampler_checks(estimator, check):
    check(estimator)


# --- the rebalancers themselves, on images ---------------------------------------------------------------------
def images(counts=(8, 4, 2), size=6, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Grayscale uint8 images (N, size, size), class k brighter than class k−1."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    X = np.clip(60 * y[:, None, None] + rng.integers(0, 80, (len(y), size, size)), 0, 255).astype(np.uint8)
    return X, y


def one_line_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert isinstance(err.value, DiffbalanceError) and "\n" not in str(err.value) and " — fix: " in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_tags_say_image_sampler(name):
    reb = build_rebalancer(name)
    tags = get_tags(reb)
    assert is_sampler(reb) and reb._estimator_type == "sampler" and tags.estimator_type == "sampler"
    assert tags.target_tags.required and tags.sampler_tags is not None and not tags.sampler_tags.sample_indices
    assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array and not tags.input_tags.sparse


@pytest.mark.parametrize("name", NAMES)
def test_bad_y_and_empty_X_are_one_line_value_errors(name):
    X, y = images()
    fit = build_rebalancer(name, device="cpu").fit_resample
    one_line_value_error(lambda: fit(X[:2], [0.5, 1.7]), "Unknown label type 'continuous'")
    one_line_value_error(lambda: fit(X, np.zeros(len(X))), "one class")
    one_line_value_error(lambda: fit(X[:2], np.array([1, "a"], dtype=object)), "Unknown label type 'unknown'")
    one_line_value_error(lambda: fit(X, np.eye(3)[y]), "multilabel")
    one_line_value_error(lambda: fit(X, None), "y is None")
    one_line_value_error(lambda: fit(X[:0], y[:0]), "X holds no images")
    one_line_value_error(lambda: fit(X[:, :0], y), "0 pixels")


@pytest.mark.parametrize("name", NAMES)
def test_column_y_and_lists_come_back_as_imbalanced_learn_returns_them(name):
    X, y = images()
    X_res, y_res = build_rebalancer(name, device="cpu").fit_resample(X, y)
    X_col, y_col = build_rebalancer(name, device="cpu").fit_resample(X, y[:, None])
    assert y_col.shape == y_res.shape == (len(X_res),) and np.array_equal(y_col, y_res)  # (N, 1) in → (N',) out
    assert np.array_equal(X_col, X_res)
    X_list, y_list = build_rebalancer(name, device="cpu").fit_resample(X.tolist(), y.tolist())
    assert isinstance(X_list, list) and isinstance(y_list, list)
    assert np.array_equal(np.asarray(X_list), X_res) and y_list == y_res.tolist()
    X_t, y_t = build_rebalancer(name, device="cpu").fit_resample(torch.from_numpy(X), torch.from_numpy(y))
    assert isinstance(X_t, torch.Tensor) and X_t.dtype == torch.uint8 and y_t.dtype == torch.int64
    assert np.array_equal(X_t.numpy(), X_res) and np.array_equal(y_t.numpy(), y_res)


@pytest.mark.parametrize("name", NAMES)
def test_init_and_set_params_store_and_fit_checks(name):
    reb = build_rebalancer(name, device="cpu")
    swept = clone(reb).set_params(batch_size=0, random_state="x")  # stored, not checked
    assert swept.get_params()["batch_size"] == 0
    one_line_value_error(lambda: swept.fit_resample(*images()), "rebalancer .*random_state='x' is not an integer")
    swept.set_params(random_state=0)
    one_line_value_error(lambda: swept.fit_resample(*images()), r"batch_size=0 is invalid")
    with pytest.raises(DiffbalanceError, match=r"methods\[3\]\.params\.batch_size=0 is invalid"):
        build_rebalancer(name, {"batch_size": 0}, path="methods[3].params")


def flatten(X):
    return np.asarray(X, dtype=np.float32).reshape(len(X), -1) / 255


def classifier_pipeline(name: str, **params):
    return make_pipeline(build_rebalancer(name, device="cpu", **params), FunctionTransformer(flatten),
                         LogisticRegression(max_iter=200))


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_cross_val_score_and_grid_search_on_images(name):
    X, y = images(counts=(12, 6, 4))
    scores = cross_val_score(classifier_pipeline(name), X, y, cv=2)
    assert scores.shape == (2,) and np.isfinite(scores).all()
    step = classifier_pipeline(name).steps[0][0]
    grid = GridSearchCV(classifier_pipeline(name), {f"{step}__random_state": [0, 1]}, cv=2).fit(X, y)
    assert grid.best_params_[f"{step}__random_state"] in (0, 1)
    # a bad value reaches the rebalancer through set_params and is refused when it fits, with the usual one line
    bad = GridSearchCV(classifier_pipeline(name), {f"{step}__batch_size": [0]}, cv=2, error_score="raise")
    with pytest.raises(DiffbalanceError, match="batch_size=0 is invalid"):
        bad.fit(X, y)
