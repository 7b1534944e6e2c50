"""How many load chains run at once: `parallel_loads`, and its default taken from udevd."""

from __future__ import annotations

import os

import pytest

from kmodd.daemon import loader
from kmodd.daemon.loader import PARALLEL_LOADS_MAX, parallel_limit


def test_a_configured_number_is_used_as_it_is() -> None:
    assert [parallel_limit(n) for n in (1, 3, 100)] == [1, 3, 100]


@pytest.mark.parametrize(("cpus", "chains"), [(1, 18), (2, 20), (8, 32), (24, 64), (64, 64)])
def test_zero_runs_as_many_chains_as_udevd_runs_workers(
        monkeypatch: pytest.MonkeyPatch, cpus: int, chains: int) -> None:
    # udevd: children_max = 2 * CPUs + 16 (before its memory limit); kmodd caps it at 64.
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    assert parallel_limit(0) == chains
    assert PARALLEL_LOADS_MAX == 64


def test_zero_counts_the_cpus_this_process_may_run_on() -> None:
    assert parallel_limit(0) == min(2 * len(os.sched_getaffinity(0)) + 16, 64)
