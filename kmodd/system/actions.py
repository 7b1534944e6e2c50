"""What modprobe does to the system when it is not a dry run: insert, remove, run commands.

`HostActions` is the `Actions` a plan runs with: module files go to the kernel through a
`KernelPort` (the real one, or the simulated kernel in tests), install commands run through
`/bin/sh -c` with `MODPROBE_MODULE` set, as libkmod's `command_do` does (a failing command
is EINVAL). `HostRemoval` is modprobe's removal side (`rmmod_do_remove_module` and its
`-w` retry loop, `command_do("remove")`).

Two limits kmod does not have, which change nothing while commands behave:

* `COMMAND_NESTING_MAX`: an install or remove command that runs modprobe, whose module has
  a command that runs modprobe again, ... nests at most this deep. The depth travels in the
  environment (`KMODD_COMMAND_DEPTH`, set for every command kmodd runs); at the limit the
  command is not run and the step fails like a failing command (EINVAL). kmod would recurse
  until the system runs out of processes.
* `COMMAND_TIMEOUT`: a command still running after this many seconds (`KMODD_COMMAND_TIMEOUT`
  overrides it; 0 means no limit) is killed with SIGKILL, together with every process it
  started, and the step fails with ETIME ("Timer expired").

Both say so in one `ERROR` line of the tool's own (no libkmod source location, so it is
never mistaken for one of kmod's messages).

The daemon runs commands with `run_command` instead: output captured, in a session and
process group of their own, and tracked (`CommandTracker`) so that a stopping daemon can end
every process a command started, wherever it was reparented.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, BinaryIO, Protocol

from kmodd.core.kmod.libkmodlog import LibkmodEvent, strerror
from kmodd.core.kmod.plan import ProbeFlag, Step
from kmodd.core.kmod.resolve import Module

if TYPE_CHECKING:
    from kmodd.system.kernel import KernelPort
    from kmodd.system.modstate import SysModules
    from kmodd.system.root import Root

#: `-w`: the first retry interval in milliseconds, doubled each time as
#: get_backoff_delta_msec does.
WAIT_FIRST_INTERVAL_MSEC = 1
#: Characters of a daemon-run command's output kept for its log record.
COMMAND_OUTPUT_MAX = 4096
#: How deep install/remove commands may nest (see the module docstring).
COMMAND_NESTING_MAX = 8
#: The environment variable that carries the nesting depth to nested tools.
COMMAND_DEPTH_ENV = "KMODD_COMMAND_DEPTH"
#: Seconds an install/remove command may run: udev kills a worker (and the modprobe it runs)
#: after 180 s, so a command taking longer never worked under udev either.
COMMAND_TIMEOUT = 180.0
#: The environment variable that overrides COMMAND_TIMEOUT (seconds; 0: no limit).
COMMAND_TIMEOUT_ENV = "KMODD_COMMAND_TIMEOUT"
#: Where the processes a timed-out command started are found (by parent pid), to kill its
#: whole tree without moving it out of the terminal's process group.
PROC = "/proc"


class ErrorLog(Protocol):
    """A tool's own ERROR messages (kmodd.cli.kmodtool.ToolLog)."""

    def err(self, text: str) -> None: ...


class Front(Protocol):
    """The tool an action works for: its environment, output and log."""

    environ: dict[str, str]
    stdout: BinaryIO
    stderr: BinaryIO

    @property
    def log(self) -> ErrorLog: ...

    def show(self, text: str) -> None: ...

    def LOG(self, message: str) -> None: ...

    def libkmod(self, event: LibkmodEvent) -> None: ...


def _fd_of(stream: BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def command_depth(environ: Mapping[str, str]) -> int:
    """How many install/remove commands this tool runs inside (0 at the top)."""
    text = environ.get(COMMAND_DEPTH_ENV, "")
    return int(text) if text.isdigit() else 0


def command_timeout(environ: Mapping[str, str]) -> float | None:
    """Seconds a command may run (None: no limit), from KMODD_COMMAND_TIMEOUT or the default."""
    text = environ.get(COMMAND_TIMEOUT_ENV)
    if text is None:
        return COMMAND_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        return COMMAND_TIMEOUT
    if value != value or value < 0:  # NaN or negative: not a usable limit
        return COMMAND_TIMEOUT
    return None if value == 0 else value


@dataclass(frozen=True, slots=True)
class ShellResult:
    """How `/bin/sh -c COMMAND` ended."""

    status: int  # what kmod's WEXITSTATUS() makes of it (0 also when sh died of a signal)
    error: int = 0  # errno when it could not be started
    timed_out: bool = False


def _proc_stats() -> Iterator[tuple[int, list[bytes]]]:
    """Every process's pid and the fields of /proc/PID/stat after its name (state, ppid,
    pgrp...): "pid (comm) state ...", and comm may hold spaces and parentheses."""
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        try:
            with open(f"{PROC}/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(entry), stat[stat.rfind(b")") + 2:].split()


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for child, fields in _proc_stats():
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


#: How long a killed command's processes get to be gone before the tool goes on anyway.
KILL_GRACE = 2.0


def _running(pid: int) -> bool:
    """Alive and not yet a zombie."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and everything below it, and wait (briefly) until they are gone:
    SIGKILL is delivered asynchronously, and a tool that reports the command killed must
    not leave it running behind its back."""
    victims = [pid, *_descendants(pid)]
    for victim in victims:
        with contextlib.suppress(OSError):  # it may have ended meanwhile
            os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + KILL_GRACE
    while any(_running(v) for v in victims[1:]) and time.monotonic() < deadline:
        time.sleep(0.005)


def run_shell(command: str, environ: Mapping[str, str], module: str,
              stdout: BinaryIO, stderr: BinaryIO, *, timeout: float | None = None
              ) -> ShellResult:
    """system(3) with MODPROBE_MODULE set, and the nesting depth one deeper.

    The command writes straight to the tool's output, as a child of system() does: to the
    file descriptors when the streams have them, else (in-process runs) into the streams.
    It stays in the tool's process group (system() does not move it), so a terminal treats
    it as the tool itself; on timeout it and everything it started are killed.
    """
    env = dict(environ)
    env["MODPROBE_MODULE"] = module
    env[COMMAND_DEPTH_ENV] = str(command_depth(environ) + 1)
    out_fd, err_fd = _fd_of(stdout), _fd_of(stderr)
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command], env=env,
            stdout=out_fd if out_fd is not None else subprocess.PIPE,
            stderr=err_fd if err_fd is not None else subprocess.PIPE,
        )
    except OSError as e:
        return ShellResult(-1, e.errno or errno.ENOEXEC)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, err = proc.communicate()
        timed_out = True
    if out:
        stdout.write(out)
    if err:
        stderr.write(err)
    if timed_out:
        return ShellResult(-1, timed_out=True)
    # WEXITSTATUS() of a shell killed by a signal is 0: kmod counts that as success.
    return ShellResult(max(proc.returncode, 0))


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command from modprobe.d ended: its exit status and what it printed."""

    status: int | None  # exit status (128+N when killed by signal N); None: did not finish
    output: str  # stdout and stderr together, cut to COMMAND_OUTPUT_MAX characters
    error: str | None = None  # why there is no status (could not run, timed out)


class CommandKind(StrEnum):
    """Which modprobe.d directive a daemon-run command comes from."""

    INSTALL = "install"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class RunningCommand:
    """A command a daemon is running: its shell's pid, which is also its process group's
    id (each command runs in a session of its own)."""

    pid: int
    kind: CommandKind
    module: str
    command: str
    started: float  # time.monotonic()


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, from /proc/*/stat."""
    group = str(pgid).encode()
    return [pid for pid, fields in _proc_stats()
            if len(fields) > 2 and fields[0] != b"Z" and fields[2] == group]


class CommandTracker:
    """The commands a daemon runs now, so that a stop can end them (`signal_all`) and start
    no more (`close`). Thread-safe: commands start and end in the loader's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, RunningCommand] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _add(self, command: RunningCommand) -> bool:
        """Track `command`; False when the tracker is closed (the caller kills it)."""
        with self._lock:
            if self._closed:
                return False
            self._running[command.pid] = command
            return True

    def _discard(self, pid: int) -> None:
        with self._lock:
            self._running.pop(pid, None)

    def running(self) -> tuple[RunningCommand, ...]:
        with self._lock:
            return tuple(self._running.values())

    def close(self) -> None:
        """No command starts from now on (run_command answers that it was not run)."""
        with self._lock:
            self._closed = True

    def signal_all(self, signum: int) -> tuple[RunningCommand, ...]:
        """Send `signum` to every running command's whole process group; those signalled."""
        signalled = []
        for command in self.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(command.pid, signum)
                signalled.append(command)
        return tuple(signalled)

    @staticmethod
    def alive(command: RunningCommand) -> bool:
        """Whether any process of the command's group is still running."""
        return bool(_group_members(command.pid))


def run_command(command: str, module: str, environ: Mapping[str, str],
                timeout: float, tracker: CommandTracker | None = None,
                kind: CommandKind = CommandKind.INSTALL) -> CommandResult:
    """`/bin/sh -c command` with MODPROBE_MODULE set, for a daemon: no terminal, output
    captured, in a session (and process group) of its own, and the whole group killed when
    it runs longer than `timeout`. `tracker`: where a stopping daemon finds it."""
    if tracker is not None and tracker.closed:
        return CommandResult(None, "", "not run: kmodd is stopping")
    env = dict(environ)
    env["MODPROBE_MODULE"] = module
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as e:
        return CommandResult(None, "", f"cannot run /bin/sh: {os.strerror(e.errno or 0)}")
    running = RunningCommand(proc.pid, kind, module, command, time.monotonic())
    if tracker is not None and not tracker._add(running):
        # The daemon began to stop between the check above and the start.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        text = out.decode(errors="backslashreplace")[:COMMAND_OUTPUT_MAX]
        return CommandResult(None, text, f"timed out after {timeout:g}s and was killed")
    finally:
        if tracker is not None:
            tracker._discard(proc.pid)
    text = out.decode(errors="backslashreplace")[:COMMAND_OUTPUT_MAX]
    status = proc.returncode
    return CommandResult(status if status >= 0 else 128 - status, text)


class HostActions:
    """Insert module files and run install commands, as libkmod's insertion loop does.

    `files` is the root module paths live under (a test root, when the tool runs in one
    without `-d`); the paths are shown as the resolver gives them.
    """

    def __init__(self, front: Front, kernel: KernelPort, files: Root | None = None) -> None:
        self.front = front
        self.kernel = kernel
        self.files = files

    def insert(self, step: Step, options: str, flags: ProbeFlag) -> int:
        path = step.path
        if path is None:
            self.front.libkmod(LibkmodEvent(
                "no_module_path", f"could not find module by name='{step.name}'\n"))
            return errno.ENOENT
        real = self.files.path(path) if self.files is not None and path.startswith("/") \
            else path
        result = self.kernel.insert(
            real, options,
            force_vermagic=bool(flags & ProbeFlag.FORCE_VERMAGIC),
            force_modversion=bool(flags & ProbeFlag.FORCE_MODVERSION),
        )
        if result.ok:
            return 0
        self.front.libkmod(LibkmodEvent(
            "insert_failed", f"Failed to insert module '{path}': {strerror(result.errno)}\n"))
        return result.errno

    def run_install(self, step: Step, command: str) -> int:
        front = self.front
        depth = command_depth(front.environ)
        if depth >= COMMAND_NESTING_MAX:
            front.log.err(nesting_message("install", command, step.name, depth))
            return errno.EINVAL
        timeout = command_timeout(front.environ)
        result = run_shell(command, front.environ, step.name, front.stdout, front.stderr,
                           timeout=timeout)
        if result.timed_out:
            front.log.err(timeout_message("install", command, step.name, timeout))
            return errno.ETIME
        if result.error:
            front.libkmod(LibkmodEvent(
                "command_run",
                f"Could not run install command '{command}' for module {step.name}: "
                f"{strerror(result.error)}\n"))
            return errno.EINVAL
        if result.status:
            front.libkmod(LibkmodEvent(
                "command_status",
                f"Error running install command '{command}' for module {step.name}: "
                f"retcode {result.status}\n"))
            return errno.EINVAL
        return 0


def nesting_message(kind: str, command: str, module: str, depth: int) -> str:
    """kmodd's own words when the nesting guard stops a command."""
    return (f"not running {kind} command '{command}' for module {module}: commands are "
            f"already nested {depth} deep ({COMMAND_DEPTH_ENV}, limit {COMMAND_NESTING_MAX}); "
            "the command probably loads its own module again\n")


def timeout_message(kind: str, command: str, module: str, timeout: float | None) -> str:
    """kmodd's own words when a command ran out of time and was killed."""
    return (f"{kind} command '{command}' for module {module} was killed after {timeout:g} s "
            f"({COMMAND_TIMEOUT_ENV})\n")


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
        """rmmod_do_remove_module: print `rmmod X` when showing; retry on EAGAIN under -w.

        As in kmod 30, the retries back off exponentially (2, 4, 8 ... ms, the last one cut
        to the deadline), and when the deadline passes while the module is still in use the
        loop ends with success and says nothing (kmod fixed that only in 2025, 4d7dc86).
        kmod 30 spins forever when it checks the clock 1 ms or more after the deadline
        (`get_backoff_delta_msec` shifts a zero delta until it fits); kmodd ends there as
        kmod 30 does when it checks exactly on the deadline.
        """
        self.front.show(f"rmmod {mod.name}\n")
        if self.dry_run:
            return 0
        t0 = tend = interval = 0
        while True:
            err = self.kernel.delete(mod.name, force=self.force)
            if err and not self.wait_msec:
                self.front.libkmod(LibkmodEvent(
                    "remove_failed", f"could not remove '{mod.name}': {strerror(err)}\n"))
            if err == errno.EEXIST:
                if not self.first_time:
                    err = 0
                else:
                    self.front.LOG(f"Module {mod.name} is not in kernel.\n")
                break
            if err != errno.EAGAIN or not self.wait_msec:
                break
            if not t0:
                t0 = _now_msec()
                tend = t0 + self.wait_msec
                interval = WAIT_FIRST_INTERVAL_MSEC
            until, interval = backoff_delta_msec(_now_msec(), tend, interval)
            _sleep_until_msec(until)
            err = 0  # sleep_until_msec's result, which the loop keeps if it ends here
            if not interval:
                break
        if err and self.wait_msec:
            self.front.log.err(f"could not remove '{mod.name}': {strerror(err)}\n")
        return err

    def run_remove_command(self, mod: Module, command: str) -> int:
        """tools/modprobe.c command_do("remove"): $CMDLINE_OPTS is empty for removals."""
        cmd = command.replace("$CMDLINE_OPTS", "")
        self.front.show(f"remove {cmd}\n")
        if self.dry_run:
            return 0
        front = self.front
        depth = command_depth(front.environ)
        if depth >= COMMAND_NESTING_MAX:
            front.log.err(nesting_message("remove", cmd, mod.name, depth))
            front.LOG(f"Error running remove command for {mod.name}\n")
            return 1
        timeout = command_timeout(front.environ)
        result = run_shell(cmd, front.environ, mod.name, front.stdout, front.stderr,
                           timeout=timeout)
        if result.timed_out:
            front.log.err(timeout_message("remove", cmd, mod.name, timeout))
        if result.status:
            front.LOG(f"Error running remove command for {mod.name}\n")
            return result.status if result.status > 0 else 1
        return 0


def backoff_delta_msec(now: int, tend: int, delta: int) -> tuple[int, int]:
    """shared/util.c get_backoff_delta_msec: (wake-up time, new delta), all in ms.

    A zero delta ends the retries; kmod 30 would loop forever when `now` is past `tend`.
    """
    delta = delta << 1 if delta else 1
    while now + delta > tend:
        delta >>= 1
        if not delta:
            break
    if not delta and tend > now:
        delta = tend - now
    return now + delta, delta


def _now_msec() -> int:
    return time.monotonic_ns() // 1_000_000


def _sleep_until_msec(until: int) -> None:
    remaining = until - _now_msec()
    if remaining > 0:
        time.sleep(remaining / 1000)
