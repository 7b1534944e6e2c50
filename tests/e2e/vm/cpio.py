"""Write uncompressed `newc` cpio archives, the format the kernel unpacks as an initramfs.

Written here rather than by running `cpio -o` so that every entry is owned by root, entries
come in a stable order (parents before children), and a tree on disk and a few in-memory files
(the per-boot overlay) go through one writer. Hard links are stored as independent files: the
kernel needs no link bookkeeping then, at the cost of a few duplicated bytes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
# The kernel needs each concatenated segment to start on a 4-byte boundary; 512 keeps it
# aligned for any reader and matches what `cpio -o` itself pads to.
SEGMENT_ALIGN = 512
_COPY_CHUNK = 1 << 20
# Zeroes after the last archive of an initrd. QEMU loads the initrd at the top of the RAM below
# 4 GiB, and with many devices the firmware's ACPI tables/high zone overlap its last KiBs:
# seen as "initramfs name without nulterm" or a corrupted file of the overlay in about half of
# the `rich` boots. The kernel skips zero padding between and after archives.
TAIL_GUARD = 2 << 20


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member held in memory (for small generated files, dirs and symlinks)."""

    path: str  # relative, without a leading '/'
    mode: int  # full st_mode, file type bits included
    data: bytes = b""


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


class Writer:
    """Streams newc entries into a binary file; `close()` writes the trailer and pads."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._written = 0

    def _write(self, b: bytes) -> None:
        self._out.write(b)
        self._written += len(b)

    def _header(self, name: str, mode: int, size: int, mtime: int = 0, rdev: int = 0) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._ino, mode, 0, 0, 1, mtime, size,
            0, 0, os.major(rdev), os.minor(rdev), len(encoded), 0,
        )
        self._ino += 1
        self._write(MAGIC + b"".join(b"%08X" % f for f in fields) + encoded)
        self._write(b"\0" * _pad4(110 + len(encoded)))

    def add(self, entry: Entry) -> None:
        self._header(entry.path, entry.mode, len(entry.data))
        self._write(entry.data + b"\0" * _pad4(len(entry.data)))

    def add_tree(self, top: str, prefix: str = "") -> None:
        """Add everything under `top`, named `prefix/relative-path` (parents first)."""
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, top)
            for name in [*sorted(filenames), *dirnames]:
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(prefix, rel_dir, name))
                self.add_path(full, rel)
            # os.walk does not descend into symlinked dirs; they were added as links above.
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]

    def add_path(self, full: str, name: str) -> None:
        st = os.lstat(full)
        mode = st.st_mode
        mtime = int(st.st_mtime)
        if stat.S_ISREG(mode):
            self._header(name, mode, st.st_size, mtime)
            with open(full, "rb") as f:
                copied = 0
                while chunk := f.read(_COPY_CHUNK):
                    self._write(chunk)
                    copied += len(chunk)
            if copied != st.st_size:
                raise RuntimeError(f"{full}: size changed while archiving")
            self._write(b"\0" * _pad4(st.st_size))
        elif stat.S_ISLNK(mode):
            target = os.readlink(full).encode()
            self._header(name, mode, len(target), mtime)
            self._write(target + b"\0" * _pad4(len(target)))
        elif stat.S_ISDIR(mode):
            self._header(name, mode, 0, mtime)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self._header(name, mode, 0, mtime, st.st_rdev)
        # sockets and fifos in a freshly built rootfs are leftovers; the initramfs needs none

    def close(self) -> None:
        self._header(TRAILER, 0, 0)
        self._write(b"\0" * ((SEGMENT_ALIGN - self._written % SEGMENT_ALIGN) % SEGMENT_ALIGN))


def write_entries(path: str, entries: Iterable[Entry]) -> None:
    """Write an archive holding exactly `entries` (parents must come before children)."""
    with open(path, "wb") as f:
        w = Writer(f)
        for e in entries:
            w.add(e)
        w.close()


def concatenate(out_path: str, parts: Iterable[str]) -> None:
    """Join archives into one initrd, each part starting on a SEGMENT_ALIGN boundary,
    followed by TAIL_GUARD zero bytes."""
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(_COPY_CHUNK):
                    out.write(chunk)
            pad = (SEGMENT_ALIGN - out.tell() % SEGMENT_ALIGN) % SEGMENT_ALIGN
            out.write(b"\0" * pad)
        out.write(b"\0" * TAIL_GUARD)
    os.replace(tmp, out_path)
