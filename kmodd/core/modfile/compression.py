"""Module-file compression: recognise it by magic bytes and undo it, as libkmod does.

libkmod (`libkmod-file.c: kmod_file_open`) never trusts the file name: it reads the first
`MAGIC_PROBE_SIZE` bytes and compares them with each format's magic. A file shorter than that
is refused outright (EINVAL); a file with no known magic is taken as it is (an ELF image, or
garbage that the ELF reader will refuse).

Errors carry libkmod's own wording (`xz: File is corrupt`, `zstd: <name>`, `gzip: <msg>`),
because depmod prints them through its log as `depmod: ERROR: xz: File is corrupt`.

xz and gzip use the standard library. zstd needs the `zstandard` package (a declared
dependency of kmodd), which lives in the system layer (`kmodd.system.codecs`) and is handed
in; it is imported only when a zstd file is met, so everything else works
without it and the rest of this module stays stdlib-only.
"""

from __future__ import annotations

import errno
import lzma
import zlib
from collections.abc import Callable
from enum import StrEnum
from mmap import mmap

#: What module contents may come as: bytes, or a read-only mapping of the file.
Buffer = bytes | bytearray | mmap


class Compression(StrEnum):
    """How a module file is stored."""

    NONE = "none"
    ZSTD = "zstd"
    XZ = "xz"
    GZIP = "gzip"


#: Magic bytes in libkmod's probe order.
MAGICS: tuple[tuple[Compression, bytes], ...] = (
    (Compression.ZSTD, b"\x28\xb5\x2f\xfd"),
    (Compression.XZ, b"\xfd7zXZ\x00"),
    (Compression.GZIP, b"\x1f\x8b"),
)

#: libkmod reads this many bytes to probe the magic (the longest magic, xz's) and refuses a
#: shorter file with EINVAL, whatever its format.
MAGIC_PROBE_SIZE = max(len(magic) for _, magic in MAGICS)

#: File-name endings of modules, and the compression each implies (used to walk trees; the
#: contents decide how a file is read).
EXTENSIONS: tuple[tuple[str, Compression], ...] = (
    (".ko", Compression.NONE),
    (".ko.gz", Compression.GZIP),
    (".ko.xz", Compression.XZ),
    (".ko.zst", Compression.ZSTD),
)

#: liblzma's conditions as libkmod words them (`xz_uncompress_belch`), keyed by the text
#: CPython's `_lzma` module raises for the same condition.
_XZ_MESSAGES: dict[str, str] = {
    "Input format not supported by decoder": "File format not recognized",
    "Invalid or unsupported options": "Unsupported compression options",
    "Corrupt input data": "File is corrupt",
    "Insufficient buffer space": "Unexpected end of input",
    "Memory usage limit was reached": "Cannot allocate memory",
}

_XZ_TRUNCATED = "Unexpected end of input"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip wrapper only, as gzdopen() expects


class DecompressError(Exception):
    """A module file whose compressed data cannot be decoded.

    `message` is what libkmod logs (`xz: File is corrupt`); `errno` is the error libkmod
    returns for it, which depmod prints with strerror().
    """

    def __init__(self, message: str, err: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.message = message
        self.errno = err


def detect(data: Buffer) -> Compression:
    """The compression of a module file's contents, by magic bytes (libkmod's order).

    Raises DecompressError(EINVAL) for data shorter than the probe, as libkmod does.
    """
    if len(data) < MAGIC_PROBE_SIZE:
        raise DecompressError(
            f"file too short to identify ({len(data)} bytes < {MAGIC_PROBE_SIZE})",
            errno.EINVAL,
        )
    head = bytes(data[:MAGIC_PROBE_SIZE])
    for kind, magic in MAGICS:
        if head.startswith(magic):
            return kind
    return Compression.NONE


ZstdDecoder = Callable[[Buffer], bytes]


def decompress(data: Buffer, zstd: ZstdDecoder | None = None) -> Buffer:
    """The module image inside `data`: decoded when compressed, `data` itself otherwise.

    zstd needs a third-party codec, which the system layer passes in
    (`kmodd.system.codecs.unzstd`); without one a zstd file is an error.
    """
    kind = detect(data)
    if kind is Compression.NONE:
        return data
    if kind is Compression.XZ:
        return _unxz(data)
    if kind is Compression.ZSTD:
        if zstd is None:
            raise DecompressError("zstd: no zstd decoder given", errno.ENOTSUP)
        return zstd(data)
    return _gunzip(data)


def _unxz(data: Buffer) -> bytes:
    # libkmod decodes with LZMA_CONCATENATED: one stream after another until the input ends.
    out: list[bytes] = []
    rest = data
    while True:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            out.append(dec.decompress(rest))
        except lzma.LZMAError as exc:
            reason = _XZ_MESSAGES.get(str(exc), "Internal error (bug)")
            raise DecompressError(f"xz: {reason}") from None
        except MemoryError:
            raise DecompressError("xz: Cannot allocate memory", errno.ENOMEM) from None
        if not dec.eof:
            raise DecompressError(f"xz: {_XZ_TRUNCATED}")
        rest = dec.unused_data.lstrip(b"\0")  # stream padding between concatenated streams
        if not rest:
            return b"".join(out)


def _gunzip(data: Buffer) -> bytes:
    # gzread() reads member after member; a short member is "unexpected end of file".
    out: list[bytes] = []
    rest = data
    while rest:
        dobj = zlib.decompressobj(_GZIP_WBITS)
        try:
            out.append(dobj.decompress(rest))
        except zlib.error as exc:
            text = str(exc)
            colon = text.find(": ")
            raise DecompressError(f"gzip: {text[colon + 2:] if colon >= 0 else text}") from None
        if not dobj.eof:
            raise DecompressError("gzip: unexpected end of file")
        rest = dobj.unused_data
        if not rest.startswith(b"\x1f\x8b"):
            break  # gzread ignores trailing garbage after a complete member
    return b"".join(out)
