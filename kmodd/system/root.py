"""Where the system lives: one movable prefix for /sys, /proc, /etc, /run and /lib/modules.

Every edge in kmodd asks a `Root` for its paths, so a test points a whole daemon or tool at a
temporary tree by building `Root(prefix)`. The real system is `Root()` (prefix `/`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

#: kmod's MODULE_DIRECTORY on Debian 12 (a build-time constant of kmod).
MODULE_DIRECTORY = "/lib/modules"

#: modprobe.d search path, highest precedence first (kmod 30 on Debian 12).
MODPROBE_D_DIRS = (
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
)

#: depmod.d search path, highest precedence first (kmod 30 on Debian 12).
DEPMOD_D_DIRS = (
    "/etc/depmod.d",
    "/run/depmod.d",
    "/usr/local/lib/depmod.d",
    "/lib/depmod.d",
)


class Root(NamedTuple):
    """A filesystem root. `path("/proc/cmdline")` maps an absolute path under it."""

    prefix: str = "/"

    def path(self, absolute: str) -> str:
        """Map an absolute system path into this root."""
        if not absolute.startswith("/"):
            raise ValueError(f"not an absolute path: {absolute!r}")
        if self.prefix in ("", "/"):
            return absolute
        return self.prefix.rstrip("/") + absolute

    @property
    def is_host(self) -> bool:
        return self.prefix in ("", "/")

    def sys(self, *parts: str) -> str:
        return self.path(os.path.join("/sys", *parts))

    def proc(self, *parts: str) -> str:
        return self.path(os.path.join("/proc", *parts))

    def run(self, *parts: str) -> str:
        return self.path(os.path.join("/run", *parts))

    def etc(self, *parts: str) -> str:
        return self.path(os.path.join("/etc", *parts))

    def sys_module(self, name: str, *parts: str) -> str:
        # Asked several times for every insert: formatted, not joined.
        tail = "/" + "/".join(parts) if parts else ""
        return self.path(f"/sys/module/{name}{tail}")

    def modprobe_d_dirs(self) -> tuple[str, ...]:
        return tuple(self.path(d) for d in MODPROBE_D_DIRS)

    def depmod_d_dirs(self) -> tuple[str, ...]:
        return tuple(self.path(d) for d in DEPMOD_D_DIRS)


def kernel_release() -> str:
    """The running kernel's release string (`uname -r`)."""
    return os.uname().release


def module_dir(basedir: str | None, kver: str) -> str:
    """`<basedir>/lib/modules/<kver>`, as modprobe and depmod build it from `-d`/`-b` and `-S`.

    Like kmod, a trailing slash on basedir is kept (`dir//lib/modules/...`).
    """
    return f"{basedir or ''}{MODULE_DIRECTORY}/{kver}"
