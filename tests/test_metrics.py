"""classification_metrics on a hand-computed 10-row example.

y_true = 0 0 0 0 1 1 1 2 2 2,  y_pred = 0 0 0 1 1 1 1 2 2 0
confusion (rows true): [3 1 0], [0 3 0], [1 0 2]
recall    = 3/4, 3/3, 2/3         precision = 3/4, 3/4, 2/2
F1        = 3/4, 2·(3/4)/(7/4) = 6/7, 2·(2/3)/(5/3) = 4/5
accuracy  = 8/10;  macro-F1 = (3/4 + 6/7 + 4/5)/3;  balanced accuracy = (3/4 + 1 + 2/3)/3
train counts 300, 150, 60 (max 300): many ≥ 200 → class 0; few ≤ 100 → class 2; medium → class 1.
"""

import json

import pytest
import torch

from diffbalance.infra.errors import DiffbalanceError
from diffbalance.evaluate.metrics import classification_metrics, shot_groups

Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 1, 1, 2, 2, 0]
NAMES = ("cat", "dog", "owl")


def test_hand_example():
    m = classification_metrics(torch.tensor(Y_TRUE), torch.tensor(Y_PRED), NAMES, train_counts=[300, 150, 60])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 3, 0], [1, 0, 2]]
    assert m["per_class_recall"] == pytest.approx([3 / 4, 1.0, 2 / 3])
    assert m["per_class_precision"] == pytest.approx([3 / 4, 3 / 4, 1.0])
    assert m["per_class_f1"] == pytest.approx([3 / 4, 6 / 7, 4 / 5])
    assert m["macro_f1"] == pytest.approx((3 / 4 + 6 / 7 + 4 / 5) / 3)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 2 / 3) / 3)
    assert m["many_shot_accuracy"] == pytest.approx(3 / 4)
    assert m["medium_shot_accuracy"] == pytest.approx(1.0)
    assert m["few_shot_accuracy"] == pytest.approx(2 / 3)
    assert (m["many_shot_classes"], m["medium_shot_classes"], m["few_shot_classes"]) == (["cat"], ["dog"], ["owl"])
    assert m["test_counts"] == [4, 3, 3]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "many_shot_accuracy"):
        assert type(m[key]) is float
    assert all(type(v) is float for v in m["per_class_f1"])
    assert json.loads(json.dumps(m)) == m


def test_empty_shot_groups_are_none_and_thresholds_are_parameters():
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES, train_counts=[300, 290, 250])
    assert m["many_shot_accuracy"] == pytest.approx((3 / 4 + 1 + 2 / 3) / 3)
    assert m["medium_shot_accuracy"] is None and m["few_shot_accuracy"] is None
    assert "many_shot_accuracy" not in classification_metrics(Y_TRUE, Y_PRED, NAMES)
    groups = shot_groups([300, 150, 60], many_fraction=0.5, few_fraction=0.1)
    assert groups == {"many": [0, 1], "medium": [2], "few": []}


def test_class_never_tested_or_predicted():
    m = classification_metrics([0, 1, 1], [0, 1, 0], ("a", "b", "c"), train_counts=[10, 10, 1])
    assert m["per_class_f1"][2] == 0.0 and m["few_shot_accuracy"] is None
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5) / 2)  # over the classes present in y_true


@pytest.mark.parametrize(
    "y_true, y_pred",
    [([0, 1], [0]), ([0, 3], [0, 1]), ([0.5, 1.0], [0, 1]), ([], [])],
)
def test_bad_inputs(y_true, y_pred):
    with pytest.raises(DiffbalanceError):
        classification_metrics(y_true, y_pred, NAMES)
