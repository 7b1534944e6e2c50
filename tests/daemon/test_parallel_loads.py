"""How many load chains run at once: the `parallel_loads` setting and its default."""

from __future__ import annotations

from kmodd.core.settings import defaults
from kmodd.daemon.loader import PARALLEL_LOADS_DEFAULT, parallel_limit


def test_a_configured_number_is_used_as_it_is() -> None:
    assert [parallel_limit(n) for n in (1, 3, 100)] == [1, 3, 100]


def test_zero_lets_64_chains_run_at_once_and_is_the_default() -> None:
    assert (defaults().parallel_loads, parallel_limit(0), PARALLEL_LOADS_DEFAULT) == (0, 64, 64)
