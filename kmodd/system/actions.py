"""What modprobe does to the system when it is not a dry run: insert, remove, run commands.

`HostActions` is the `Actions` a plan runs with on the real system: module files go to the
kernel through `kmodd.system.kernel`, install commands run through `/bin/sh -c` with
`MODPROBE_MODULE` set, as libkmod's `command_do` does (a failing command is an error,
-EINVAL). `HostRemoval` is modprobe's removal side (`rmmod_do_remove_module`,
`command_do("remove")`).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from kmodd.cli.kmodlog import LOG_ERR
from kmodd.core.plan import ProbeFlag
from kmodd.core.resolve import Module, Resolver

if TYPE_CHECKING:
    from kmodd.cli.kmodlog import ToolLog


class Front(Protocol):
    """The tool an action works for: its settings, output and log."""

    environ: dict[str, str]
    log: ToolLog

    def show(self, text: str) -> None: ...

    def LOG(self, message: str) -> None: ...


def run_shell(command: str, environ: Mapping[str, str], module: str) -> int:
    """system(3) with MODPROBE_MODULE set: the exit status, or -1 if it could not run."""
    env = dict(environ)
    env["MODPROBE_MODULE"] = module
    try:
        return subprocess.run(["/bin/sh", "-c", command], env=env, check=False).returncode
    except OSError:
        return -1


class HostActions:
    """Insert module files into the running kernel and run install commands."""

    def __init__(self, front: Front, resolver: Resolver) -> None:
        self.front = front
        self.resolver = resolver

    def insert(self, mod: Module, path: str, options: str, flags: ProbeFlag) -> int:
        from kmodd.system import kernel

        force = 0
        if flags & ProbeFlag.FORCE_VERMAGIC:
            force |= kernel.FORCE_VERMAGIC
        if flags & ProbeFlag.FORCE_MODVERSION:
            force |= kernel.FORCE_MODVERSION
        err = kernel.insert_file(path, options, force)
        if err < 0:
            self.front.log.library(
                6, f"Failed to insert module '{path}': {os.strerror(-err)}",
                ("libkmod/libkmod-module.c", 949, "kmod_module_insert_module"),
            )
        return err

    def run_install(self, mod: Module, command: str) -> int:
        status = run_shell(command, self.front.environ, mod.name)
        if status < 0:
            self.front.log.library(
                LOG_ERR,
                f"Could not run install command '{command}' for module {mod.name}: "
                f"{os.strerror(errno.ENOEXEC)}",
                ("libkmod/libkmod-module.c", 1041, "command_do"),
            )
            return -errno.EINVAL
        if status:
            self.front.log.library(
                LOG_ERR,
                f"Error running install command '{command}' for module {mod.name}: "
                f"retcode {status}",
                ("libkmod/libkmod-module.c", 1047, "command_do"),
            )
            return -errno.EINVAL
        return 0


class HostRemoval:
    """modprobe -r's side effects (and their dry-run printing)."""

    def __init__(self, front: Front, resolver: Resolver, *, dry_run: bool, force: bool,
                 wait_msec: int, first_time: bool, sysfs: object) -> None:
        self.front = front
        self.resolver = resolver
        self.dry_run = dry_run
        self.force = force
        self.wait_msec = wait_msec
        self.first_time = first_time
        self.sysfs = sysfs

    def log(self, message: str) -> None:
        self.front.LOG(message)

    def refcnt(self, name: str) -> int:
        return self.sysfs.refcnt(name)  # type: ignore[attr-defined, no-any-return]

    def holders(self, name: str) -> list[str]:
        return self.sysfs.holders(name)  # type: ignore[attr-defined, no-any-return]

    def remove_module(self, mod: Module) -> int:
        self.front.show(f"rmmod {mod.name}\n")
        if self.dry_run:
            return 0
        from kmodd.system import kernel

        deadline = 0.0
        interval = 0.0
        while True:
            err = kernel.delete(mod.name, force=self.force)
            if err < 0 and not self.wait_msec:
                self.front.log.library(
                    LOG_ERR, f"could not remove '{mod.name}': {os.strerror(-err)}",
                    ("libkmod/libkmod-module.c", 856, "kmod_module_remove_module"),
                )
            if err == -errno.EEXIST:
                if not self.first_time:
                    err = 0
                else:
                    self.front.LOG(f"Module {mod.name} is not in kernel.\n")
                break
            if err == -errno.EAGAIN and self.wait_msec:
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.wait_msec / 1000
                    interval = 0.001
                else:
                    interval *= 2
                while interval > 0.0005 and now + interval > deadline:
                    interval /= 2
                if interval <= 0.0005:
                    break
                time.sleep(interval)
                continue
            break
        if err < 0 and self.wait_msec:
            self.front.log.tool(LOG_ERR, f"could not remove '{mod.name}': {os.strerror(-err)}\n")
        return err

    def run_remove_command(self, mod: Module, command: str) -> int:
        cmd = command.replace("$CMDLINE_OPTS", "")
        self.front.show(f"remove {cmd}\n")
        if self.dry_run:
            return 0
        status = run_shell(cmd, self.front.environ, mod.name)
        if status:
            self.front.LOG(f"Error running remove command for {mod.name}\n")
            return -status if status > 0 else -1
        return 0
