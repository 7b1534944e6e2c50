"""The record file `/run/kmodd/loads` (format and meaning: `core.autoload.loadrecords`).

Only the instance that holds the instance lock touches it. At start it reads what the earlier
instances of this boot wrote (through `safeopen`: a regular file, at most RECORD_FILE_MAX
bytes), and replaces the file, by rename, with a fresh one that starts with its own `start`
record and carries over what is still true (the modules earlier instances loaded that are
live, the devices unbound while watched). Then it appends: one `write()` of one line per
record on a descriptor opened `O_APPEND | O_NOFOLLOW`, from whichever thread acts (the
loader's threads write `insert` before finit_module and `done` after it). A line written
survives the process the moment write() returns; /run is a tmpfs, so nothing is flushed.

A record that cannot be written (ENOSPC on a full /run, EIO...) turns the record off for the
rest of the instance's life and is reported once: the daemon goes on loading modules; only
the next instance's knowledge is poorer. The file is rewritten from what this instance knows
once it passes RECORD_FILE_COMPACT bytes, so a daemon that runs for months keeps it small.
"""

from __future__ import annotations

import contextlib
import errno as E
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kmodd.core.autoload.loadrecords import (
    NO_DEVICE,
    History,
    Kind,
    Loaded,
    carried_lines,
    line,
    parse,
    summarize,
)
from kmodd.system.safeopen import Refused, read_regular

#: The record file, under the daemon's root (next to the instance lock).
RECORD_FILE = "/run/kmodd/loads"
#: Largest record file read at start: a boot's records are a few KiB (two lines per insert);
#: a file this large was not written by kmodd and is not read.
RECORD_FILE_MAX = 8 << 20
#: The file is rewritten (carried records only) once the appended records pass this.
RECORD_FILE_COMPACT = 1 << 20
#: The kernel's id of this boot.
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def read_boot_id(path: str) -> str:
    """This boot's id; "" when it cannot be read (then every record counts as this boot's)."""
    try:
        with open(path, "rb") as f:
            return f.read(64).decode("ascii", "replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Opened:
    """What `open_records` found and made."""

    history: History
    records: LoadRecords


class LoadRecords:
    """Appends records; thread-safe. `on_failure(text)` is told once when writing stops."""

    def __init__(self, path: str, fd: int | None, pid: int, boot_id: str, started: float,
                 carried: Iterable[Loaded], unbound: Iterable[str],
                 on_failure: Callable[[str], None] | None = None,
                 failure: str | None = None) -> None:
        self.path = path
        self.pid = pid
        self.boot_id = boot_id
        self.started = started
        self.on_failure = on_failure
        self._fd = fd
        self._lock = threading.Lock()
        self._written = 0
        #: what a compaction carries: module -> (pid, devpaths); devices unbound now
        self._loaded: dict[str, Loaded] = {c.module: c for c in carried}
        self._unbound: set[str] = set(unbound)
        self._inserting: dict[str, list[str]] = {}
        self.failure = failure  # why records are not kept, or None

    @property
    def kept(self) -> bool:
        return self._fd is not None

    def _append(self, data: bytes) -> None:
        # Called with self._lock held.
        fd = self._fd
        if fd is None:
            return
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(E.ENOSPC, os.strerror(E.ENOSPC))
        except OSError as e:
            self._stop_keeping(f"cannot write {self.path}: {e.strerror or e}; module loads "
                               "are no longer recorded for the next instance")
            return
        self._written += written
        if self._written > RECORD_FILE_COMPACT:
            self._compact()

    def _stop_keeping(self, text: str) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.failure is None:
            self.failure = text
            if self.on_failure is not None:
                self.on_failure(text)

    def _compact(self) -> None:
        """Rewrite the file with what is true now (called with self._lock held)."""
        loaded = list(self._loaded.values())
        loaded += [Loaded(m, self.pid, tuple(d), False) for m, d in self._inserting.items()]
        data = carried_lines(self.pid, self.boot_id, self.started, loaded, self._unbound)
        fd = _replace(self.path, data)
        if isinstance(fd, str):
            self._stop_keeping(fd)
            return
        old, self._fd = self._fd, fd
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)
        self._written = len(data)

    def write(self, kind: Kind, *fields: str) -> None:
        data = line(kind, self.pid, *fields)
        with self._lock:
            self._note(kind, fields)
            self._append(data)

    def _note(self, kind: Kind, fields: tuple[str, ...]) -> None:
        match kind:
            case Kind.INSERT:
                devs = self._inserting.setdefault(fields[0], [])
                if fields[1] != NO_DEVICE and fields[1] not in devs:
                    devs.append(fields[1])
            case Kind.DONE:
                devs = self._inserting.pop(fields[0], [])
                if fields[1] == "0":
                    self._loaded[fields[0]] = Loaded(fields[0], self.pid, tuple(devs), True)
            case Kind.REMOVED:
                self._loaded.pop(fields[0], None)
            case Kind.UNBOUND:
                self._unbound.add(fields[0])
            case Kind.BOUND:
                self._unbound.discard(fields[0])
            case _:
                pass

    # -- the records the daemon writes ------------------------------------------------------

    def inserting(self, module: str, devpath: str | None) -> None:
        self.write(Kind.INSERT, module, devpath or NO_DEVICE)

    def inserted(self, module: str, errno: int) -> None:
        self.write(Kind.DONE, module, str(errno))

    def removed(self, module: str) -> None:
        self.write(Kind.REMOVED, module)

    def unbound(self, devpath: str) -> None:
        self.write(Kind.UNBOUND, devpath)

    def bound(self, devpath: str, driver: str) -> None:
        self.write(Kind.BOUND, devpath, driver)

    def reprobed(self, devpath: str, result: str) -> None:
        self.write(Kind.REPROBE, devpath, result)

    def stopped(self) -> None:
        self.write(Kind.STOP)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _replace(path: str, data: bytes) -> int | str:
    """Write `data` to a new file beside `path`, rename it over `path`, and return an append
    descriptor of it; or the reason it could not be done."""
    tmp = f"{path}.new"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # never write through whatever was left at the temporary name
        fd = os.open(tmp, flags | os.O_EXCL, 0o600)
    except OSError as e:
        return f"cannot create {tmp}: {e.strerror or e}"
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return f"cannot write {path}: {e.strerror or e}"


def open_records(path: str, boot_id: str, live: frozenset[str], *,
                 pid: int | None = None,
                 on_failure: Callable[[str], None] | None = None) -> Opened:
    """Read what earlier instances of this boot recorded at `path`, and start this instance's
    record there. `live`: the modules live now (only those are carried over)."""
    pid = os.getpid() if pid is None else pid
    data = read_regular(path, RECORD_FILE_MAX)
    problems: list[str] = []
    if isinstance(data, Refused):
        if not data.missing:
            problems.append(data.text)
        history = History()
    else:
        records, problems = parse(data, path)
        history = summarize(records, boot_id, problems)
    history = History(history.instances, history.loaded, history.unbound, tuple(problems))
    carried = [entry for name, entry in sorted(history.loaded.items()) if name in live]
    started = time.time()
    with contextlib.suppress(OSError):  # a failure shows in _replace, with its reason
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = _replace(path, carried_lines(pid, boot_id, started, carried, history.unbound))
    if isinstance(fd, str):
        records_ = LoadRecords(path, None, pid, boot_id, started, carried, history.unbound,
                               on_failure, failure=fd)
    else:
        records_ = LoadRecords(path, fd, pid, boot_id, started, carried, history.unbound,
                               on_failure)
    return Opened(history, records_)
