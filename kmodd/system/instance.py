"""One daemon per root: an exclusive lock on a file under the root's /run/kmodd.

Two daemons for one machine would both receive every uevent, load every module twice and
fight over the control socket. The first daemon holds `flock(LOCK_EX)` on LOCK_FILE for as
long as it runs (the kernel drops the lock when the process ends, however it ends, so a
crash never leaves a stale lock); the file holds its pid, for the second daemon's message.
The lock is taken before the control socket's path is touched.

The file is opened without following a symlink (O_NOFOLLOW), close-on-exec (install
commands must not inherit the lock), created 0600, and must be a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat

#: The lock file, under the daemon's root.
LOCK_FILE = "/run/kmodd/kmodd.lock"
#: Bytes of the lock file read for the holder's pid.
PID_TEXT_MAX = 32


class AlreadyRunning(Exception):
    """Another daemon holds the lock for this root."""

    def __init__(self, pid: int | None, lock_path: str) -> None:
        self.pid = pid
        self.lock_path = lock_path
        super().__init__(pid, lock_path)


class LockUnusable(Exception):
    """The lock file cannot be opened or locked (the message says why)."""


class InstanceLock:
    """The held lock; `release()` (or process exit) gives it up. The file is left in place:
    removing a lock file races with the next daemon opening it."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, PID_TEXT_MAX, 0).decode("ascii", errors="replace").strip()
        if text.isdigit():
            return int(text)
    return None


def take_instance_lock(path: str) -> InstanceLock:
    """Lock `path` (creating it and its directory); raises AlreadyRunning or LockUnusable."""
    with contextlib.suppress(OSError):  # a failure shows in the open below, with its reason
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LockUnusable(f"{path} is a symbolic link; not following it") from None
        raise LockUnusable(f"cannot open {path}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LockUnusable(f"{path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(_holder(fd), path) from None
        except OSError as e:
            raise LockUnusable(f"cannot lock {path}: {e.strerror or e}") from None
        with contextlib.suppress(OSError):  # the pid is for messages only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return InstanceLock(fd, path)
