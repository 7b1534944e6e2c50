"""Opening a file on anyone's behalf: regular files only, a size cap, a read that cannot block.

Every file kmodd reads because a path was named (modprobe.d and `-C` entries, kmodd.conf,
a module file for `explain`, `modinfo` or `insmod`) goes through `read_regular` or
`map_regular`. The file is opened `O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY` (opening a
FIFO without a writer then returns at once instead of waiting for one, and a terminal never
becomes the controlling one), `fstat`ed on the descriptor (so a symlink to `/dev/zero` is seen
for what it opens, not for what its name looks like), refused unless it is a regular file,
refused when it is larger than the cap for its kind, and only then read. A regular file's read
never blocks, and the read asks for at most cap + 1 bytes, so a file that grows while it is
read is refused too, never read without end.

`/dev/null` is the one exception: kmod and systemd document a symlink to it as the way to mask
a configuration file, so it reads as an empty file.

Bad input never raises here: the answer is the data or a `Refused` value whose `text` is the
log line ("PATH: is a FIFO, ignoring"). Files kmodd reads from fixed places of its own (the
`/proc` and `/sys` files, whose `st_size` is 0 while they have content) are not read here.
"""

from __future__ import annotations

import errno as E
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

#: Largest modprobe.d / modprobe.conf / `-C` file, `modules.softdep` and kmodd.conf. Real
#: ones are a few KiB (Debian's largest, a blacklist of framebuffer drivers, is under 4 KiB);
#: 1 MiB is hundreds of times that, and small enough that a mistake (a log file or an image
#: named `*.conf`) costs the daemon nothing.
CONFIG_FILE_MAX = 1 << 20
#: Largest module file read or mapped. Distribution modules are at most tens of MiB
#: uncompressed (amdgpu.ko); one built with DWARF debug information may reach a few hundred.
#: The kernel itself takes up to INT_MAX bytes, but nothing kmodd decides needs more than
#: 256 MiB, and module files are mapped (file-backed pages), not copied, where that is possible.
MODULE_FILE_MAX = 256 << 20
#: /dev/null's device number (major 1, minor 3): the documented mask, read as empty.
DEV_NULL = os.makedev(1, 3)
#: The flags of every open here: no waiting for a FIFO's writer, no controlling terminal.
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
#: Bytes asked of each read() call (the result is assembled up to the cap).
READ_CHUNK = 1 << 16


class Refusal(StrEnum):
    """Why a file was not read."""

    OPEN_FAILED = "open-failed"  # the path could not be opened (errno says why)
    NOT_REGULAR = "not-regular"  # a FIFO, device, directory or socket
    TOO_LARGE = "too-large"  # over the cap for its kind (or grew past it while read)
    READ_FAILED = "read-failed"  # read() failed (EIO, ...)


#: What each file type is called in messages (`stat.S_IFMT` value -> words).
FILE_TYPE_WORDS: dict[int, str] = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


@dataclass(frozen=True, slots=True)
class Refused:
    """A file that was not read: the path as messages show it, why, and the errno if any."""

    path: str
    refusal: Refusal
    reason: str  # "is a FIFO", "is larger than 1048576 bytes", "No such file or directory"
    errno: int = 0

    @property
    def text(self) -> str:
        """The log line, kmod- and systemd-style: `PATH: is a FIFO, ignoring`."""
        return f"{self.path}: {self.reason}, ignoring"

    @property
    def missing(self) -> bool:
        """The path does not exist (callers that treat an absent file as normal say nothing)."""
        return self.refusal is Refusal.OPEN_FAILED and self.errno in (E.ENOENT, E.ENOTDIR)


def file_type_words(mode: int) -> str:
    """`a FIFO`, `a character device`, ... for a `st_mode`."""
    return FILE_TYPE_WORDS.get(stat.S_IFMT(mode), f"of file type {stat.S_IFMT(mode):#o}")


def _open(path: str | bytes, shown: str) -> int | Refused:
    try:
        return os.open(path, OPEN_FLAGS)
    except OSError as err:
        code = err.errno or E.EIO
        if code == E.ENXIO:
            # open() of a socket (or of a FIFO without a writer for O_WRONLY) fails so; say
            # what the file is rather than "No such device or address".
            try:
                mode = os.stat(path).st_mode
            except OSError:
                mode = 0
            if mode and not stat.S_ISREG(mode):
                return Refused(shown, Refusal.NOT_REGULAR, f"is {file_type_words(mode)}", code)
        return Refused(shown, Refusal.OPEN_FAILED, os.strerror(code), code)


def _check(fd: int, shown: str, cap: int) -> os.stat_result | Refused:
    """fstat the open file: a regular file within `cap`, or why not."""
    try:
        st = os.fstat(fd)
    except OSError as err:
        code = err.errno or E.EIO
        return Refused(shown, Refusal.READ_FAILED, os.strerror(code), code)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == DEV_NULL:
        return st
    if not stat.S_ISREG(st.st_mode):
        return Refused(shown, Refusal.NOT_REGULAR, f"is {file_type_words(st.st_mode)}")
    if st.st_size > cap:
        return Refused(shown, Refusal.TOO_LARGE, f"is larger than {cap} bytes")
    return st


def _open_checked(path: str | bytes, cap: int, shown: str
                  ) -> tuple[int, os.stat_result] | Refused:
    """Open `path` and fstat it (`_check`); the caller closes the descriptor."""
    fd = _open(path, shown)
    if isinstance(fd, Refused):
        return fd
    st = _check(fd, shown, cap)
    if isinstance(st, Refused):
        os.close(fd)
        return st
    return fd, st


def read_lines(path: str | bytes, cap: int, shown: str | None = None
               ) -> Iterator[str] | Refused:
    """The lines of a regular text file, read a chunk at a time (a large table such as
    /proc/kallsyms is never held whole), or why it was not opened. Reading stops after
    `cap` bytes; a read error ends the lines early."""
    shown = shown if shown is not None else os.fsdecode(path)
    opened = _open_checked(path, cap, shown)
    if isinstance(opened, Refused):
        return opened
    return _lines_of(opened[0], cap)


def _lines_of(fd: int, cap: int) -> Iterator[str]:
    try:
        rest, total = b"", 0
        while total < cap:
            try:
                chunk = os.read(fd, min(READ_CHUNK, cap - total))
            except OSError:
                break
            if not chunk:
                break
            total += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if rest:
            yield rest.decode(errors="replace")
    finally:
        os.close(fd)


def read_regular(path: str | bytes, cap: int, shown: str | None = None) -> bytes | Refused:
    """The contents of a regular file of at most `cap` bytes, or why it was not read.

    `shown` names the file in the refusal (default: `path`, decoded).
    """
    shown = shown if shown is not None else os.fsdecode(path)
    opened = _open_checked(path, cap, shown)
    if isinstance(opened, Refused):
        return opened
    fd, st = opened
    try:
        if not stat.S_ISREG(st.st_mode):
            return b""  # /dev/null
        chunks: list[bytes] = []
        total = 0
        # At most cap + 1 bytes: one byte over the cap proves the file grew past it.
        while total <= cap:
            try:
                chunk = os.read(fd, min(READ_CHUNK, cap + 1 - total))
            except OSError as err:
                code = err.errno or E.EIO
                return Refused(shown, Refusal.READ_FAILED, os.strerror(code), code)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            return Refused(shown, Refusal.TOO_LARGE, f"is larger than {cap} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def map_regular(path: str | bytes, cap: int, shown: str | None = None
                ) -> bytes | mmap.mmap | Refused:
    """A read-only private mapping of a regular file of at most `cap` bytes (b"" when empty),
    or why it was not mapped. Only the pages the caller touches are read."""
    shown = shown if shown is not None else os.fsdecode(path)
    opened = _open_checked(path, cap, shown)
    if isinstance(opened, Refused):
        return opened
    fd, st = opened
    try:
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return b""
        try:
            return mmap.mmap(fd, st.st_size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        except (OSError, ValueError) as err:
            code = getattr(err, "errno", None) or E.EINVAL
            return Refused(shown, Refusal.READ_FAILED, os.strerror(code), code)
    finally:
        os.close(fd)
