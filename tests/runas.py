"""The type of the `as_nobody` fixture (tests/conftest.py), importable by test modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol


class RunAs(Protocol):
    """Runs `fn` in a child process as uid/gid `nobody` with `groups`; returns its result."""

    def __call__(self, fn: Callable[[], str], groups: Sequence[int] = ()) -> str: ...
