"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import pwd
import traceback
from collections.abc import Callable, Sequence

import pytest

from tests.kerneltree import KernelTree, debian_kernel_tree
from tests.runas import RunAs


@pytest.fixture(scope="session")
def debian_tree() -> KernelTree:
    """The real Debian kernel tree (4023 modules), indexed by the real kmod depmod."""
    return debian_kernel_tree()


@pytest.fixture
def as_nobody() -> RunAs:
    """Run a function in a forked child that dropped to uid/gid `nobody`; return what it returns.

    Forking keeps the already-imported interpreter (`nobody` may not be able to exec the
    test's Python). `groups` become its supplementary groups. An exception in the child
    fails the test with the child's traceback.
    """
    nobody = pwd.getpwnam("nobody")

    def run(fn: Callable[[], str], groups: Sequence[int] = ()) -> str:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            status = 0
            try:
                os.close(read_end)
                os.setgroups(list(groups))
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                out = fn()
            except BaseException:
                out, status = traceback.format_exc(), 1
            with os.fdopen(write_end, "w") as w:
                w.write(out)
            os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end) as r:
            out = r.read()
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0, out
        return out

    return run
