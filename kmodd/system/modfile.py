"""Opening a module file the way Debian's libkmod 30 opens it.

The file is mapped, not read, so only the pages of the headers and sections asked for are
touched. Compression is decided by the magic bytes; Debian's kmod 30 decodes zstd and xz
(it is built without zlib, so a gzip file is handed on as it is and fails as ELF).
"""

from __future__ import annotations

import errno as E
import mmap
import os

from kmodd.core import compression

#: What Debian 12's libkmod decompresses (kmod 30 built +ZSTD +XZ -ZLIB).
DEBIAN_KMOD_DECOMPRESSES = frozenset({compression.Compression.ZSTD, compression.Compression.XZ})


def map_module(path: str) -> bytes | mmap.mmap | int:
    """The file's bytes (a read-only private mapping), or the errno opening it gave."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        return err.errno or E.EIO
    try:
        size = os.fstat(fd).st_size
        return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ) if size else b""
    except (OSError, ValueError) as err:
        return getattr(err, "errno", None) or E.EINVAL
    finally:
        os.close(fd)


def module_image(raw: bytes | mmap.mmap) -> bytes | mmap.mmap | int:
    """The ELF image inside a module file's contents, or libkmod's errno for a bad stream."""
    from kmodd.system.codecs import unzstd

    try:
        kind = compression.detect(raw[: compression.MAGIC_PROBE_SIZE])
        if kind not in DEBIAN_KMOD_DECOMPRESSES:
            return raw
        return bytes(compression.decompress(bytes(raw), unzstd))
    except compression.DecompressError as err:  # too short to identify, or a bad stream
        return err.errno
