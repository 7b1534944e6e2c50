"""Fixtures for the scenario tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def kmodd_front_end() -> None:
    """kmodd's modprobe front end must import: until it exists, tests using this fixture error
    at set-up (without stopping the collection of other tests)."""
    import kmodd.cli.modprobe  # noqa: F401
