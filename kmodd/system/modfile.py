"""Opening a module file the way Debian's libkmod 30 opens it.

The file is mapped, not read, so only the pages of the headers and sections asked for are
touched. Compression is decided by the magic bytes; Debian's kmod 30 decodes zstd and xz
(it is built without zlib, so a gzip file is handed on as it is and fails as ELF).
The file is opened through `kmodd.system.safeopen`: a FIFO is never waited on, and a device,
directory or socket, or a file over `MODULE_FILE_MAX`, is an errno, never mapped or read.
"""

from __future__ import annotations

import errno as E
import mmap

from kmodd.core.modfile import compression
from kmodd.system.codecs import unzstd
from kmodd.system.safeopen import MODULE_FILE_MAX, Refusal, Refused, map_regular

#: What Debian 12's libkmod decompresses (kmod 30 built +ZSTD +XZ -ZLIB).
DEBIAN_KMOD_DECOMPRESSES = frozenset({compression.Compression.ZSTD, compression.Compression.XZ})
#: The errno a file that is opened but not mapped stands for: ENODEV is what mmap() answers
#: for a FIFO, directory or socket; a file over the cap is EFBIG.
REFUSAL_ERRNO = {Refusal.NOT_REGULAR: E.ENODEV, Refusal.TOO_LARGE: E.EFBIG}


def map_module(path: str) -> bytes | mmap.mmap | int:
    """The file's bytes (a read-only private mapping), or the errno opening it gave."""
    mapped = map_regular(path, MODULE_FILE_MAX)
    if isinstance(mapped, Refused):
        return mapped.errno or REFUSAL_ERRNO.get(mapped.refusal, E.EIO)
    return mapped


def module_image(raw: bytes | mmap.mmap) -> bytes | mmap.mmap | int:
    """The ELF image inside a module file's contents, or libkmod's errno for a bad stream."""

    try:
        kind = compression.detect(raw[: compression.MAGIC_PROBE_SIZE])
        if kind not in DEBIAN_KMOD_DECOMPRESSES:
            return raw
        return bytes(compression.decompress(bytes(raw), unzstd))
    except compression.DecompressError as err:  # too short to identify, or a bad stream
        return err.errno
