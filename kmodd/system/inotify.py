"""Changes to modprobe.d and the module index, as debounced events (Linux inotify via ctypes).

The daemon rebuilds its snapshot when a modprobe.d `*.conf` file or one of the index files
that depmod writes changes. Each directory is watched (so new, changed, renamed and removed
files inside it are all seen: depmod and editors write a temporary file and rename it over the
old one). A directory that does not exist yet is watched for through its parent, and a watched
directory that is removed is watched for again the same way. Bursts are coalesced: a change
is reported once nothing has changed for `debounce` seconds, or `max_delay` seconds after the
first event of the burst, whichever comes first.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kmodd.system.root import Root

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

#: Events on files inside a watched directory that mean "content may differ now".
DIRECTORY_MASK = (
    IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)
#: Events on the parent of a directory that does not exist yet.
PARENT_MASK = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR
#: The index files whose replacement means the module index changed (depmod's outputs that
#: kmodd reads).
INDEX_FILES = frozenset({
    "modules.dep.bin",
    "modules.alias.bin",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.softdep",
    "modules.order",
})
#: Default quiet time before a burst of changes is reported, in seconds.
DEFAULT_DEBOUNCE = 0.5
#: Longest a burst is held back, in seconds, however busy the directory stays.
DEFAULT_MAX_DELAY = 5.0
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """A directory and which files in it count: exact `names`, or names ending in `suffix`."""

    directory: str
    names: frozenset[str] | None = None
    suffix: str | None = None

    def wants(self, name: str) -> bool:
        if self.names is not None:
            return name in self.names
        if name.startswith("."):
            return False  # kmod skips hidden files; editors' swap files start with "."
        return self.suffix is None or name.endswith(self.suffix)


@dataclass(frozen=True, slots=True)
class Change:
    """A coalesced burst: the files that changed, and whether inotify lost events."""

    paths: frozenset[str]
    overflow: bool = False


def config_targets(root: Root, module_dir: str) -> tuple[WatchTarget, ...]:
    """modprobe.d directories (`*.conf`) and the module directory's index files."""
    targets = [WatchTarget(d, suffix=".conf") for d in root.modprobe_d_dirs()]
    targets.append(WatchTarget(module_dir, names=INDEX_FILES))
    return tuple(targets)


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return libc


def _wake(waiter: asyncio.Future[None]) -> None:
    """Wake `waiter` unless it is already done (cancelled by a timeout or by its task)."""
    if not waiter.done():
        waiter.set_result(None)


class ChangeWatcher:
    """An async iterator of `Change` values for a set of `WatchTarget`s."""

    def __init__(
        self,
        targets: Iterable[WatchTarget],
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self._fd: int = fd
        self._debounce = debounce
        self._max_delay = max_delay
        self._targets = tuple(targets)
        self._watching: dict[int, WatchTarget] = {}  # wd -> target watched directly
        self._waiting: dict[int, list[WatchTarget]] = {}  # wd of a parent -> missing targets
        self._pending: set[str] = set()
        self._overflow = False
        for target in self._targets:
            self._watch(target)

    def _add_watch(self, path: str, mask: int) -> int:
        wd: int = self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_add_watch {path}: {os.strerror(e)}")
        return wd

    def _watch(self, target: WatchTarget) -> bool:
        """Watch the target's directory, or its parent for the directory to appear."""
        try:
            self._watching[self._add_watch(target.directory, DIRECTORY_MASK)] = target
            return True
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
        try:
            wd = self._add_watch(os.path.dirname(target.directory), PARENT_MASK)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
            return False  # neither exists: nothing to watch for until a restart
        waiting = self._waiting.setdefault(wd, [])
        if target not in waiting:
            waiting.append(target)
        return False

    @property
    def watched_directories(self) -> tuple[str, ...]:
        return tuple(sorted(t.directory for t in self._watching.values()))

    def _read_events(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                self._handle(wd, mask, os.fsdecode(raw.rstrip(b"\0")))

    def _handle(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self._overflow = True
            return
        target = self._watching.get(wd)
        if target is not None:
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                # The directory itself went away: its files are gone too; wait for it again.
                del self._watching[wd]
                self._pending.add(target.directory)
                self._watch(target)
            elif name and target.wants(name):
                self._pending.add(os.path.join(target.directory, name))
            return
        for waiting in self._waiting.get(wd, []):
            if name == os.path.basename(waiting.directory) and self._watch(waiting):
                self._waiting[wd].remove(waiting)
                self._pending.add(waiting.directory)
                # Files written before the watch was added would otherwise go unseen.
                self._pending.update(self._existing(waiting))
                break

    @staticmethod
    def _existing(target: WatchTarget) -> list[str]:
        try:
            return [
                os.path.join(target.directory, n)
                for n in os.listdir(target.directory)
                if target.wants(n)
            ]
        except OSError:
            return []

    async def _wait_readable(self, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        # The reader is level-triggered and stays registered until the `finally` below, while
        # `wait_for` (on its timeout, or when this task is cancelled) first cancels the future
        # and then yields to the loop: the fd becoming readable in that window would call
        # set_result on a cancelled future (InvalidStateError in the log). Only a pending
        # future is woken.
        loop.add_reader(self._fd, _wake, readable)
        try:
            await asyncio.wait_for(readable, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self._fd)

    async def wait_change(self) -> Change:
        """Wait for the next burst of relevant changes and return it."""
        while not (self._pending or self._overflow):
            await self._wait_readable(None)
            self._read_events()
        first = time.monotonic()
        while True:
            remaining = min(self._debounce, first + self._max_delay - time.monotonic())
            if remaining <= 0 or not await self._wait_readable(remaining):
                break
            self._read_events()
        change = Change(frozenset(self._pending), self._overflow)
        self._pending.clear()
        self._overflow = False
        return change

    def __aiter__(self) -> ChangeWatcher:
        return self

    async def __anext__(self) -> Change:
        return await self.wait_change()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
