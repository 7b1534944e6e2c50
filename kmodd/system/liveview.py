"""A cheap view of which modules are in the kernel, for deciding many events in a row.

Deciding one uevent asks for the state of each module found (built in? live?) twice, and
every question is an open() of `/sys/module/<name>/initstate` that usually fails. During a
coldplug burst that is most of the daemon's system calls. `ListedModules` lists
`/sys/module` once, at most every `LIST_MAX_AGE` seconds, and answers "not loaded" for
names it does not hold; for the names it holds it reads `initstate` like `SysModules`.

A stale answer is harmless here: it only shapes the plan, and running the plan asks the
kernel's state again (`core.kmod.plan.run_plan`, with a fresh `SysModules`) before each insert.
"""

from __future__ import annotations

import os
import time

from kmodd.core.kmod.initstate import InitState
from kmodd.system.modstate import SysModules

#: How long one listing of /sys/module is trusted, in seconds.
LIST_MAX_AGE = 0.05


class ListedModules:
    """`core.kmod.plan.LiveState` over a listing of /sys/module refreshed at most every 50 ms."""

    def __init__(self, modules: SysModules, max_age: float = LIST_MAX_AGE) -> None:
        self._modules = modules
        self._path = modules.root.sys("module")
        self._max_age = max_age
        self._names: frozenset[str] = frozenset()
        self._listed = -1.0e9

    def _listing(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._listed > self._max_age:
            try:
                self._names = frozenset(os.listdir(self._path))
            except OSError:
                self._names = frozenset()
            self._listed = now
        return self._names

    def initstate(self, name: str) -> InitState | None:
        if name not in self._listing():
            return None
        return self._modules.initstate(name)

    def forget(self) -> None:
        """List again on the next question (after the daemon loaded something)."""
        self._listed = -1.0e9
