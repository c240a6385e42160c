"""The validation split and the paired verdict: choices on held-out training images, the verdict paired by seed."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment import tiny_config  # noqa: E402

from diffbalance.cli.main import main  # noqa: E402
from diffbalance.data.imageset import ImageSet  # noqa: E402
from diffbalance.infra.errors import DiffbalanceError  # noqa: E402
from diffbalance.imbalance.validation import ValidationConfig, split_validation  # noqa: E402
from diffbalance.report.verdict import best_by_validation, paired_verdict  # noqa: E402


def labelled(counts):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return ImageSet(images, labels, tuple("abc"[: len(counts)]))


def test_split_holds_out_per_class_at_most_half_and_is_seeded():
    data = labelled([6, 18, 36])
    train, val = split_validation(data, ValidationConfig(per_class=5, seed=1))
    assert val.counts() == [3, 5, 5] and train.counts() == [3, 13, 31]
    assert set(val.images[:, 0, 0, 0].tolist()).isdisjoint(train.images[:, 0, 0, 0].tolist())
    again, _ = split_validation(data, ValidationConfig(per_class=5, seed=1))
    other, _ = split_validation(data, ValidationConfig(per_class=5, seed=2))
    assert torch.equal(train.images, again.images) and not torch.equal(train.images, other.images)
    assert split_validation(data, ValidationConfig(fraction=0.1))[1].counts() == [1, 2, 4]
    assert split_validation(data, None) == (data, None)


@pytest.mark.parametrize("bad", [{}, {"per_class": 3, "fraction": 0.1}, {"per_class": 0}, {"fraction": 0.9}])
def test_bad_validation_sections(bad):
    with pytest.raises(DiffbalanceError, match="validation"):
        ValidationConfig.from_dict(bad, path="validation")


def runs_for(gen, base, val_gen=0.7, val_base=0.6):
    runs = []
    for s, (g, b) in enumerate(zip(gen, base)):
        runs += [{"method": "cfg", "classifier": "c", "seed": s, "accuracy": g, "generative": True,
                  "validation": {"accuracy": val_gen}},
                 {"method": "over", "classifier": "c", "seed": s, "accuracy": b, "generative": False,
                  "validation": {"accuracy": val_base}}]
    return runs


def test_verdict_needs_every_seed_and_significance():
    assert paired_verdict(runs_for([0.82, 0.83, 0.82], [0.80, 0.81, 0.79]), "c")["beats"] is True
    assert paired_verdict(runs_for([0.82, 0.80, 0.84], [0.80, 0.81, 0.79]), "c")["beats"] is False  # one seed worse
    assert paired_verdict(runs_for([0.80, 0.81, 0.79], [0.82, 0.83, 0.82]), "c")["beats"] is False
    assert paired_verdict(runs_for([0.82], [0.80]), "c")["beats"] is None  # one seed: no verdict


def test_best_is_chosen_on_validation_not_test():
    runs = runs_for([0.9, 0.9], [0.5, 0.5])
    runs += [{"method": "cfg-b", "classifier": "c", "seed": s, "accuracy": 0.99, "generative": True,
              "validation": {"accuracy": 0.1}} for s in (0, 1)]
    assert best_by_validation(runs, "c", True) == "cfg"  # not cfg-b, whatever its test accuracy


def test_run_with_validation_reports_it(tmp_path):
    config = tiny_config(tmp_path, methods=["none", "oversample"], seeds=[0, 1],
                         validation={"per_class": 2, "seed": 0}, train={"epochs": 1, "batch_size": 8})
    out = tmp_path / "run"
    main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["validation_counts"] == [1, 2, 2]
    assert results["dataset"]["train_counts"] == [2, 4, 7]  # the linear profile 3, 6, 9 minus the held-out images
    assert all("validation" in r and 0 <= r["validation"]["accuracy"] <= 1 for r in results["runs"])
    report = (out / "report.md").read_text()
    assert "## Validation accuracy (%)" in report and "## Did the generated images help?" in report
