"""The running kernel's module state as libkmod reads it, under a movable root.

`SysfsView` answers the resolver's and planner's questions (`stat`, the current directory,
`/sys/module/<name>/initstate`, `refcnt`, `holders`) with libkmod's exact rules: a module
whose directory exists but whose `initstate` does not is COMING; a missing directory is
"not loaded" (-ENOENT).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from kmodd.core.plan import InitState
from kmodd.system.root import Root

_STATES = {"live\n": InitState.LIVE, "coming\n": InitState.COMING, "going\n": InitState.GOING}


class SysfsView:
    """Reads /sys/module under `root`; reports read problems through `log`.

    Module files are looked up under the root too (`files_under_root`), unless the tool was
    pointed at a directory of the host (`modprobe -d DIR`).
    """

    def __init__(self, root: Root, log: Callable[[int, str], None] | None = None,
                 *, files_under_root: bool = True) -> None:
        self.root = root
        self._log = log
        self._files_under_root = files_under_root and not root.is_host

    def stat_errno(self, path: str) -> int:
        if self._files_under_root and path.startswith("/"):
            path = self.root.path(path)
        try:
            os.stat(path)
        except OSError as e:
            return e.errno or errno.EIO
        return 0

    def cwd(self) -> str:
        pwd = os.environ.get("PWD")
        real = os.getcwd()
        if pwd and os.path.isabs(pwd):
            try:
                if os.path.samefile(pwd, real):
                    return pwd
            except OSError:
                pass
        return real

    def initstate(self, name: str) -> InitState | int:
        path = self.root.sys_module(name, "initstate")
        shown = f"/sys/module/{name}/initstate"
        try:
            with open(path, "rb") as f:
                raw = f.read(31)
        except OSError as e:
            if os.path.isdir(self.root.sys_module(name)):
                return InitState.COMING
            return -(e.errno or errno.ENOENT)
        text = raw.decode("latin-1")
        state = _STATES.get(text)
        if state is None:
            if self._log is not None:
                self._log(3, f"unknown {shown}: '{text}'")
            return -errno.EINVAL
        return state

    def refcnt(self, name: str) -> int:
        """/sys/module/<name>/refcnt, or a negative errno."""
        try:
            with open(self.root.sys_module(name, "refcnt"), "rb") as f:
                return int(f.read(31).strip() or b"0")
        except OSError as e:
            return -(e.errno or errno.ENOENT)
        except ValueError:
            return -errno.EINVAL

    def holders(self, name: str) -> list[str]:
        """The names under /sys/module/<name>/holders, in directory order."""
        try:
            return [e for e in os.listdir(self.root.sys_module(name, "holders"))
                    if e not in (".", "..")]
        except OSError:
            return []
