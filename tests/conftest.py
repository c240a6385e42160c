"""Shared test set-up: every test, and every process a test starts, caches under the test session's temporary folder —
decoded sets, image stores, FID statistics and the test-set ledger (evaluate.ledger) never land in the user's cache
(`~/.cache/diffbalance`). A test that sets $DIFFBALANCE_CACHE itself (monkeypatch.setenv) gets its own; a session
started with $DIFFBALANCE_CACHE set keeps it."""

import os

import pytest


@pytest.fixture(autouse=True)
def _session_cache(monkeypatch, tmp_path_factory):
    if "DIFFBALANCE_CACHE" not in os.environ:  # os.environ: a subprocess (the CLI, torchrun ranks) inherits it
        monkeypatch.setenv("DIFFBALANCE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
