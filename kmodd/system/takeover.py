"""The flag that makes systemd-modules-load.service stand aside (`core.runpaths.TAKEOVER_FLAG`,
under the root): created before READY=1 when kmodd loads the static lists, removed when it
does not, and marked (`LOADED_MARK`) once the lists of this boot are loaded.

Only root can write /run/kmodd, but whatever is found there is opened without following a
link and without blocking: a FIFO or a device in the flag's place is an error in words, never
a daemon waiting for a writer or a reader.
"""

from __future__ import annotations

import contextlib
import errno as E
import os
import stat

from kmodd.core.runpaths import TAKEOVER_FLAG
from kmodd.system.root import Root
from kmodd.system.safeopen import read_regular

#: The flag's content once an instance of this boot has loaded the lists.
LOADED_MARK = b"loaded\n"
#: Opening the flag for writing: never through a link, never waiting on a FIFO (ENXIO).
_WRITE_FLAGS = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


def lists_loaded_this_boot(root: Root) -> bool:
    """Did an earlier instance of this boot load the lists (the flag says so)?"""
    return read_regular(root.path(TAKEOVER_FLAG), len(LOADED_MARK)) == LOADED_MARK


def _write(path: str, data: bytes, create: bool) -> None:
    fd = os.open(path, _WRITE_FLAGS | (os.O_CREAT if create else 0), 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(E.EINVAL, "not a regular file")
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def mark_lists_loaded(root: Root) -> str | None:
    """Write LOADED_MARK into the flag; the error in words, or None."""
    try:
        _write(root.path(TAKEOVER_FLAG), LOADED_MARK, create=False)
    except OSError as e:
        return f"{TAKEOVER_FLAG}: {e.strerror}"
    return None


def announce_takeover(root: Root, taking_over: bool) -> str | None:
    """Create (or, not taking over, remove) the flag; the error in words, or None."""
    path = root.path(TAKEOVER_FLAG)
    try:
        if taking_over:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write(path, b"", create=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    except OSError as e:
        return f"{TAKEOVER_FLAG}: {e.strerror}"
    return None
