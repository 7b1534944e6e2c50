"""The kernel log at `/dev/kmsg`: watch what the kernel says during one attempt.

`with kmsg.watch() as watch: ...; watch.records()` opens `/dev/kmsg` before the attempt, seeks
to its end and afterwards reads every record the kernel added. On the real device each read()
returns one record; on a plain file (a test root, a saved log) the new bytes are cut into
records. An unreadable log is not an error for the caller: it yields no records and says why.
"""

from __future__ import annotations

import errno as E
import os
import stat
import threading
from contextlib import AbstractContextManager
from typing import Protocol

from kmodd.core.autoload.kmsg import KmsgError, KmsgRecord, parse_record, split_records
from kmodd.system.root import Root

#: Largest record the kernel hands out in one read (CONSOLE_EXT_LOG_MAX is 8192).
KMSG_RECORD_MAX = 8192
#: Stop reading after this many records in one watch (a log storm must not stall a load).
KMSG_WATCH_MAX_RECORDS = 4096


class KmsgWatch(Protocol):
    def records(self) -> list[KmsgRecord]: ...


class KmsgSource(Protocol):
    """Something that can show the kernel log lines written during an attempt."""

    def watch(self) -> AbstractContextManager[KmsgWatch]: ...


class _FdWatch:
    """One watch: its own context manager (a class, not a generator: it wraps every insert).

    Leaving it hands the descriptor back to its DevKmsg; records() then reads nothing.
    """

    def __init__(self, owner: DevKmsg | None, fd: int | None, is_device: bool,
                 problem: str | None) -> None:
        self._owner = owner
        self._fd = fd
        self._is_device = is_device
        self.problem = problem
        self.errors: list[KmsgError] = []

    def __enter__(self) -> _FdWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self._owner is not None:
            self._owner._give_back(fd, self._is_device)

    def records(self) -> list[KmsgRecord]:
        if self._fd is None:
            return []
        raws = self._read_device() if self._is_device else self._read_file()
        out: list[KmsgRecord] = []
        for raw in raws:
            parsed = parse_record(raw)
            if isinstance(parsed, KmsgError):
                self.errors.append(parsed)
            else:
                out.append(parsed)
        return out

    def _read_device(self) -> list[bytes]:
        assert self._fd is not None
        raws: list[bytes] = []
        while len(raws) < KMSG_WATCH_MAX_RECORDS:
            try:
                raw = os.read(self._fd, KMSG_RECORD_MAX)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == E.EPIPE:
                    continue  # records were overwritten while we read; go on with the next
                if err.errno == E.EINTR:
                    continue
                self.problem = f"reading /dev/kmsg: {os.strerror(err.errno or E.EIO)}"
                break
            if not raw:
                break
            raws.append(raw)
        return raws

    def _read_file(self) -> list[bytes]:
        assert self._fd is not None
        chunks = []
        while True:
            piece = os.read(self._fd, 1 << 16)
            if not piece:
                break
            chunks.append(piece)
        return split_records(b"".join(chunks))[:KMSG_WATCH_MAX_RECORDS]


class DevKmsg:
    """`/dev/kmsg` under a Root (a character device on a real system, a file in tests).

    `keep`: a watch leaves its descriptor open for the next one (a daemon watches every
    insert, from several threads: each takes a free descriptor or opens one more) until
    `close`.
    """

    def __init__(self, root: Root, *, keep: bool = False) -> None:
        self.path = root.path("/dev/kmsg")
        self._keep = keep
        self._lock = threading.Lock()
        self._free: list[tuple[int, bool]] = []  # (descriptor, is a character device)

    def _take(self) -> tuple[int, bool]:
        with self._lock:
            if self._free:
                return self._free.pop()
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return fd, stat.S_ISCHR(os.fstat(fd).st_mode)
        except OSError:
            os.close(fd)
            raise

    def watch(self) -> _FdWatch:
        fd: int | None = None
        try:
            fd, is_device = self._take()
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as err:
            if fd is not None:
                os.close(fd)
            return _FdWatch(None, None, False, f"{self.path}: {os.strerror(err.errno or E.EIO)}")
        return _FdWatch(self, fd, is_device, None)

    def _give_back(self, fd: int, is_device: bool) -> None:
        if self._keep:
            with self._lock:
                self._free.append((fd, is_device))
        else:
            os.close(fd)

    def close(self) -> None:
        """Close the descriptors kept for the next watches."""
        with self._lock:
            free, self._free = self._free, []
        for fd, _ in free:
            os.close(fd)

    def read_all(self) -> list[KmsgRecord]:
        """Every record still in the log (for `kmodctl explain` without a fresh attempt)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            watch = _FdWatch(None, fd, stat.S_ISCHR(os.fstat(fd).st_mode), None)
            return watch.records()
        finally:
            os.close(fd)
