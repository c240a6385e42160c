"""The CPU thread choice: what the user set wins; otherwise the free cores, at least one."""

import pytest

from diffbalance.infra.threads import THREADS_ENV, busy_cores, choose_threads


@pytest.fixture
def no_thread_env(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("cores,busy,expected", [(2, 0, 2), (2, 1, 1), (2, 5, 1), (16, 3, 13), (8, -1, 8)])
def test_free_cores_at_least_one(no_thread_env, cores, busy, expected):
    assert choose_threads(cores=cores, busy=busy) == expected


def test_what_the_user_set_wins(no_thread_env, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(cores=2, busy=1) == 3
    monkeypatch.setenv(THREADS_ENV, "5")
    assert choose_threads(cores=2, busy=1) == 5
    monkeypatch.setenv(THREADS_ENV, "zero")  # not a count: ignored
    assert choose_threads(cores=2, busy=1) == 3


def test_busy_cores_reads_a_count():
    assert busy_cores(samples=2, interval=0.0) >= 0
