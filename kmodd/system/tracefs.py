"""kmodd's own trace instance in tracefs, for the kernel's module requests and loads
(`core.autoload.ktrace` reads the lines), and the autoload policy file.

tracefs is `/sys/kernel/tracing`, or `/sys/kernel/debug/tracing` where only debugfs is
mounted. kmodd makes its own instance there (`instances/kmodd`, made with mkdir: the kernel
fills it with its own buffer, events and options), so it never touches the global buffer
or another tracer's settings; it sets the instance's clock to `mono` (CLOCK_MONOTONIC, the
clock of the daemon's own times), enables `module:module_request` and `module:module_load`,
and reads the instance's `trace_pipe` without blocking: the descriptor is O_NONBLOCK and the
event loop reads it when poll says it is readable. At stop the instance is removed (rmdir),
which frees its buffer. An instance left by a kmodd that was killed is taken over.

Where tracefs is not there (not mounted, no permission, a kernel without tracing), `open`
returns the reason instead; the daemon says it once and goes on without.
"""

from __future__ import annotations

import contextlib
import errno as E
import os
from collections.abc import Callable
from dataclasses import dataclass

from kmodd.core.autoload.ktrace import EVENTS
from kmodd.system.root import Root

#: Where tracefs may be, in the order tried.
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
#: kmodd's instance.
INSTANCE = "kmodd"
#: The instance's clock: CLOCK_MONOTONIC, as time.monotonic() in the daemon.
TRACE_CLOCK = "mono"
#: Bytes read from trace_pipe per read() call, and read() calls per wake-up (the rest waits
#: for the next turn of the event loop).
READ_CHUNK = 1 << 16
READS_PER_WAKE = 16
#: A partial line longer than this is cut (its text is then a drop for the parser).
MAX_PENDING = 4096


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _ensure(path: str, value: str, already: Callable[[str], bool]) -> None:
    """Write `value` to a tracefs file, unless it cannot be written and already holds it
    (the unit sets the instance up from outside kmodd's read-only sandbox)."""
    try:
        _write(path, value)
    except OSError:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                if already(f.read(4096)):
                    return
        except OSError:
            pass
        raise


def find_tracefs(root: Root) -> str | None:
    """The tracefs directory that has instances, or None."""
    for directory in TRACEFS_DIRS:
        path = root.path(directory)
        if os.path.isdir(os.path.join(path, "instances")):
            return path
    return None


@dataclass(slots=True)
class TraceInstance:
    """An open instance: read `lines()` when `fd` is readable; `close()` removes it."""

    path: str
    fd: int | None
    problems: tuple[str, ...] = ()  # what was set up only in part (the clock...)
    made: bool = True  # kmodd made the instance (else it was there: the unit's, or a
    # killed kmodd's)
    _pending: bytes = b""
    ended: bool = False  # the pipe said end of file (a test's FIFO whose writer left)

    def lines(self) -> list[str]:
        """The complete lines that can be read now, without blocking."""
        if self.fd is None:
            return []
        chunks: list[bytes] = [self._pending]
        for _ in range(READS_PER_WAKE):
            try:
                data = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                self.ended = True
                break
            chunks.append(data)
        data = b"".join(chunks)
        head, sep, rest = data.rpartition(b"\n")
        if len(rest) > MAX_PENDING:
            head, sep, rest = data, b"\n", b""
        self._pending = rest
        if not sep:
            return []
        return head.decode("utf-8", "backslashreplace").split("\n")

    def close(self) -> str | None:
        """Stop reading and remove the instance; the reason when it could not be removed."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return None
        except OSError as e:
            if not self.made:
                return None  # whoever made it removes it (the unit's ExecStopPost=)
            return f"cannot remove the trace instance {self.path}: {e.strerror or e}"
        return None


def open_instance(root: Root, name: str = INSTANCE) -> TraceInstance | str:
    """kmodd's trace instance, made and enabled; or why there is none."""
    base = find_tracefs(root)
    if base is None:
        return ("tracefs is not mounted (" + " or ".join(TRACEFS_DIRS) + " has no instances "
                "directory)")
    path = os.path.join(base, "instances", name)
    made = True
    try:
        os.mkdir(path)
    except FileExistsError:
        made = False  # made by the unit, or left by a kmodd that was killed: take it over
    except OSError as e:
        return f"cannot make the trace instance {path}: {e.strerror or e}"
    problems: list[str] = []
    try:
        _ensure(os.path.join(path, "trace_clock"), TRACE_CLOCK,
                lambda text: f"[{TRACE_CLOCK}]" in text)
    except OSError as e:
        problems.append(f"cannot set {path}/trace_clock to {TRACE_CLOCK}: {e.strerror or e} "
                        "(times are on the trace's own clock)")
    try:
        for event in EVENTS:
            _ensure(os.path.join(path, "events", event, "enable"), "1",
                    lambda text: text.strip() == "1")
        fd = os.open(os.path.join(path, "trace_pipe"),
                     os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        reason = (f"cannot enable the module tracepoints in {path}: "
                  f"{e.strerror or os.strerror(e.errno or E.EIO)}")
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        return reason
    return TraceInstance(path, fd, tuple(problems), made=made)


#: Largest global trace read at start (the boot's module events are a few KiB).
BOOT_TRACE_MAX = 8 << 20


def read_boot_trace(root: Root) -> list[str] | None:
    """The lines of the global trace buffer (`trace`: read without consuming it), where the
    kernel command line may have enabled the module events from the start of the boot;
    None when tracefs cannot be read."""
    base = find_tracefs(root)
    if base is None:
        return None
    try:
        with open(os.path.join(base, "trace"), "rb") as f:
            data = f.read(BOOT_TRACE_MAX)
    except OSError:
        return None
    return data.decode("utf-8", "backslashreplace").splitlines()


def write_policy(path: str, text: str | None) -> str | None:
    """Write the policy file at `path` atomically (a new file renamed over it), or remove it
    when `text` is None; the reason when that failed."""
    if text is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            return f"cannot remove {path}: {e.strerror or e}"
        return None
    tmp = f"{path}.new"
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            os.fchmod(fd, 0o644)  # modprobe run by anyone reads it (the unit's UMask is 0077)
            view = memoryview(text.encode())
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return f"cannot write {path}: {e.strerror or e}"
    return None
