"""The test-set ledger: distinct configs per test set, appended safely, never stopping a run."""

import json

import pytest
import torch

from diffbalance.evaluate import ledger
from diffbalance.evaluate.ledger import record_scoring, scored_by, set_digest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_set_digest_sees_pixels_shape_and_labels():
    images = torch.arange(24, dtype=torch.uint8).view(2, 3, 2, 2)
    labels = torch.tensor([0, 1])
    d = set_digest(images, labels)
    assert len(d) == 16 and d == set_digest(images.clone(), labels.clone())
    changed = images.clone()
    changed[1, 2, 1, 1] += 1
    assert set_digest(changed, labels) != d
    assert set_digest(images.view(2, 3, 4, 1), labels) != d
    assert set_digest(images, torch.tensor([1, 0])) != d
    with pytest.raises(TypeError, match="uint8"):
        set_digest(images.float(), labels)


def test_counts_distinct_configs_per_test_set(cache):
    assert scored_by("t1") == 0
    assert record_scoring("t1", "cfgA", "small_cnn seed 0") == 1
    assert record_scoring("t1", "cfgB") == 2
    assert record_scoring("t1", "cfgA") == 2  # the same config again is not another look
    assert record_scoring("t2", "cfgA") == 1  # another test set is counted apart
    assert scored_by("t1") == 2 and scored_by("t2") == 1
    lines = (cache / "ledger" / "test-sets.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0])["what"] == "small_cnn seed 0" and set(json.loads(lines[0])) == {
        "test_set", "config", "what", "time"}


def test_corrupt_lines_are_skipped(cache):
    record_scoring("t1", "cfgA")
    path = cache / "ledger" / "test-sets.jsonl"
    with open(path, "a") as f:
        f.write('not json\n["a list"]\n{"test_set": "t1", "conf')  # the last line torn, without a newline
    assert scored_by("t1") == 1
    assert record_scoring("t1", "cfgB") == 2
    assert scored_by("t1") == 2  # the new line was not glued onto the torn one


def test_symlinked_ledger_is_not_written_through(cache, tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    (cache / "ledger").mkdir(parents=True)
    (cache / "ledger" / "test-sets.jsonl").symlink_to(target)
    assert record_scoring("t1", "cfgA") == 0
    assert target.read_text() == "precious\n"


def test_unwritable_cache_does_not_raise(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DIFFBALANCE_CACHE", str(blocker / "cache"))  # a folder under a file: never writable
    ledger._note_unwritable.cache_clear()
    assert record_scoring("t1", "cfgA") == 0
    assert record_scoring("t1", "cfgB") == 0
    assert scored_by("t1") == 0
    assert capsys.readouterr().err.count("test-set ledger") == 1  # said once
