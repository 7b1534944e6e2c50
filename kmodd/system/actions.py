"""What modprobe does to the system when it is not a dry run: insert, remove, run commands.

`HostActions` is the `Actions` a plan runs with: module files go to the kernel through a
`KernelPort` (the real one, or the simulated kernel in tests), install commands run through
`/bin/sh -c` with `MODPROBE_MODULE` set, as libkmod's `command_do` does (a failing command
is -EINVAL). `HostRemoval` is modprobe's removal side (`rmmod_do_remove_module` and its
`-w` retry loop, `command_do("remove")`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from kmodd.core.libkmodlog import LibkmodEvent, strerror
from kmodd.core.plan import ProbeFlag
from kmodd.core.resolve import Module

if TYPE_CHECKING:
    from kmodd.cli.kmodtool import ToolLog
    from kmodd.system.kernel import KernelPort
    from kmodd.system.modstate import SysModules

#: `-w`: the retry interval starts here and doubles, as get_backoff_delta_msec does.
WAIT_FIRST_INTERVAL = 0.001
#: Characters of a daemon-run command's output kept for its log record.
COMMAND_OUTPUT_MAX = 4096


class Front(Protocol):
    """The tool an action works for: its environment, output and log."""

    environ: dict[str, str]
    log: ToolLog
    stdout: BinaryIO
    stderr: BinaryIO

    def show(self, text: str) -> None: ...

    def LOG(self, message: str) -> None: ...

    def libkmod(self, event: LibkmodEvent) -> None: ...


def _fd_of(stream: BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def run_shell(command: str, environ: Mapping[str, str], module: str,
              stdout: BinaryIO, stderr: BinaryIO) -> int:
    """system(3) with MODPROBE_MODULE set: the exit status, or -1 if it could not run.

    The command writes straight to the tool's output, as a child of system() does: to the
    file descriptors when the streams have them, else (in-process runs) into the streams.
    """
    env = dict(environ)
    env["MODPROBE_MODULE"] = module
    out_fd, err_fd = _fd_of(stdout), _fd_of(stderr)
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", command], env=env, check=False,
            stdout=out_fd if out_fd is not None else subprocess.PIPE,
            stderr=err_fd if err_fd is not None else subprocess.PIPE,
        )
    except OSError:
        return -1
    if out_fd is None and proc.stdout:
        stdout.write(proc.stdout)
    if err_fd is None and proc.stderr:
        stderr.write(proc.stderr)
    status = proc.returncode
    return status if status >= 0 else 128 - status  # killed by a signal: sh's convention


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command from modprobe.d ended: its exit status and what it printed."""

    status: int | None  # exit status (128+N when killed by signal N); None: did not finish
    output: str  # stdout and stderr together, cut to COMMAND_OUTPUT_MAX characters
    error: str | None = None  # why there is no status (could not run, timed out)


def run_command(command: str, module: str, environ: Mapping[str, str],
                timeout: float) -> CommandResult:
    """`/bin/sh -c command` with MODPROBE_MODULE set, for a daemon: no terminal, output
    captured, and the whole process group killed when it runs longer than `timeout`."""
    env = dict(environ)
    env["MODPROBE_MODULE"] = module
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as e:
        return CommandResult(None, "", f"cannot run /bin/sh: {os.strerror(e.errno or 0)}")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        text = out.decode(errors="backslashreplace")[:COMMAND_OUTPUT_MAX]
        return CommandResult(None, text, f"timed out after {timeout:g}s and was killed")
    text = out.decode(errors="backslashreplace")[:COMMAND_OUTPUT_MAX]
    status = proc.returncode
    return CommandResult(status if status >= 0 else 128 - status, text)


class HostActions:
    """Insert module files and run install commands, as libkmod's insertion loop does."""

    def __init__(self, front: Front, kernel: KernelPort) -> None:
        self.front = front
        self.kernel = kernel

    def insert(self, mod: Module, path: str | None, options: str, flags: ProbeFlag) -> int:
        if path is None:
            self.front.libkmod(LibkmodEvent(
                "no_module_path", f"could not find module by name='{mod.name}'\n"))
            return -errno.ENOENT
        result = self.kernel.insert(
            path, options,
            force_vermagic=bool(flags & ProbeFlag.FORCE_VERMAGIC),
            force_modversion=bool(flags & ProbeFlag.FORCE_MODVERSION),
        )
        if result.ok:
            return 0
        self.front.libkmod(LibkmodEvent(
            "insert_failed", f"Failed to insert module '{path}': {strerror(result.errno)}\n"))
        return -result.errno

    def run_install(self, mod: Module, command: str) -> int:
        front = self.front
        status = run_shell(command, front.environ, mod.name, front.stdout, front.stderr)
        if status < 0:
            self.front.libkmod(LibkmodEvent(
                "command_run",
                f"Could not run install command '{command}' for module {mod.name}: "
                f"{strerror(errno.ENOEXEC)}\n"))
            return -errno.EINVAL
        if status:
            self.front.libkmod(LibkmodEvent(
                "command_status",
                f"Error running install command '{command}' for module {mod.name}: "
                f"retcode {status}\n"))
            return -errno.EINVAL
        return 0


class HostRemoval:
    """modprobe -r's side effects (and their dry-run printing)."""

    def __init__(self, front: Front, kernel: KernelPort, modules: SysModules, *,
                 dry_run: bool, force: bool, wait_msec: int, first_time: bool) -> None:
        self.front = front
        self.kernel = kernel
        self.modules = modules  # reads /sys/module, logging through the tool
        self.dry_run = dry_run
        self.force = force
        self.wait_msec = wait_msec
        self.first_time = first_time

    def log(self, message: str) -> None:
        self.front.LOG(message)

    def refcnt(self, name: str) -> int:
        return self.modules.refcnt(name)

    def holders(self, name: str) -> list[str] | None:
        return self.modules.holders(name)

    def remove_module(self, mod: Module) -> int:
        """rmmod_do_remove_module: print `rmmod X` when showing; retry on EAGAIN under -w."""
        self.front.show(f"rmmod {mod.name}\n")
        if self.dry_run:
            return 0
        deadline = 0.0
        interval = 0.0
        while True:
            err = -self.kernel.delete(mod.name, force=self.force)
            if err < 0 and not self.wait_msec:
                self.front.libkmod(LibkmodEvent(
                    "remove_failed", f"could not remove '{mod.name}': {strerror(-err)}\n"))
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
                    interval = WAIT_FIRST_INTERVAL
                else:
                    interval *= 2
                while interval >= WAIT_FIRST_INTERVAL and now + interval > deadline:
                    interval /= 2
                if interval < WAIT_FIRST_INTERVAL:
                    break
                time.sleep(interval)
                continue
            break
        if err < 0 and self.wait_msec:
            self.front.log.err(f"could not remove '{mod.name}': {strerror(-err)}\n")
        return err

    def run_remove_command(self, mod: Module, command: str) -> int:
        cmd = command.replace("$CMDLINE_OPTS", "")
        self.front.show(f"remove {cmd}\n")
        if self.dry_run:
            return 0
        front = self.front
        status = run_shell(cmd, front.environ, mod.name, front.stdout, front.stderr)
        if status:
            self.front.LOG(f"Error running remove command for {mod.name}\n")
            return -status if status > 0 else -1
        return 0
