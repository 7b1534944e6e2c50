"""Codecs that need more than the standard library: zstd through the `zstandard` package.

`kmodd.core.modfile.compression` decodes xz and gzip itself and takes this zstd decoder as an
argument, so the core stays standard-library only.
"""

from __future__ import annotations

from kmodd.core.modfile.compression import Buffer, DecompressError


def unzstd(data: Buffer) -> bytes:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        raise DecompressError("zstd: support not installed (pip install zstandard)") from None
    # libkmod streams frame after frame until EOF and keeps what it decoded when the input
    # simply stops; only a decoding error fails the file.
    out: list[bytes] = []
    with memoryview(data) as view:
        rest: bytes | memoryview = view
        try:
            while rest:
                dobj = zstandard.ZstdDecompressor().decompressobj()
                out.append(dobj.decompress(rest))
                if not dobj.eof:
                    break
                rest = dobj.unused_data
        except zstandard.ZstdError as exc:
            text = str(exc).removeprefix("zstd decompressor error: ")
            raise DecompressError(f"zstd: {text}") from None
    return b"".join(out)
