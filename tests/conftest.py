"""Shared test set-up: the test-set ledger (evaluate.ledger) of every in-process test goes to a folder of the test
session, never to the user's cache (tests that set $DIFFBALANCE_CACHE themselves still get theirs)."""

import os

import pytest

from diffbalance.evaluate import ledger


@pytest.fixture(autouse=True)
def _session_ledger(monkeypatch, tmp_path_factory):
    if "DIFFBALANCE_CACHE" not in os.environ:  # a test's own cache (monkeypatch.setenv) keeps its own ledger
        path = tmp_path_factory.getbasetemp() / "ledger" / "test-sets.jsonl"
        real = ledger.ledger_path
        monkeypatch.setattr(ledger, "ledger_path", lambda: path if "DIFFBALANCE_CACHE" not in os.environ else real())
