"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from kerneltree import KernelTree, debian_kernel_tree  # noqa: E402


@pytest.fixture(scope="session")
def debian_tree() -> KernelTree:
    """The real Debian kernel tree (4023 modules), indexed by the real kmod depmod."""
    return debian_kernel_tree()
