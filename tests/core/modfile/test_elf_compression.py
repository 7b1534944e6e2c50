"""kmodd.core.modfile.compression: module files are recognised by magic bytes and decoded."""

from __future__ import annotations

import errno
import lzma
import mmap
import os
import tempfile
import zlib

import pytest
import zstandard

from kmodd.core.modfile.compression import (
    MAGIC_PROBE_SIZE,
    Buffer,
    Compression,
    DecompressError,
    detect,
)
from kmodd.core.modfile.compression import decompress as core_decompress
from kmodd.system.codecs import unzstd


def decompress(data: Buffer) -> Buffer:
    """The core's decompression with the system's zstd decoder, as kmodd's callers use it."""
    return core_decompress(data, unzstd)

IMAGE = b"\x7fELF" + bytes(range(256)) * 40


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)


def _gz(data: bytes) -> bytes:
    return zlib.compress(data, wbits=31)


def _zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(("packed", "kind"), [
    (_zst(IMAGE), Compression.ZSTD), (_xz(IMAGE), Compression.XZ),
    (_gz(IMAGE), Compression.GZIP), (IMAGE, Compression.NONE),
    (b"\x1f\x8bnot-gzip-at-all", Compression.GZIP),
])
def test_the_contents_decide_not_the_name(packed: bytes, kind: Compression) -> None:
    assert detect(packed) is kind


@pytest.mark.parametrize("pack", [_zst, _xz, _gz, lambda d: d])
def test_every_format_gives_back_the_image(pack) -> None:
    assert bytes(decompress(pack(IMAGE))) == IMAGE


@pytest.mark.parametrize("pack", [_zst, _xz, _gz])
def test_concatenated_streams_are_decoded_one_after_the_other(pack) -> None:
    assert decompress(pack(IMAGE[:100]) + pack(IMAGE[100:])) == IMAGE


def test_files_shorter_than_the_probe_are_refused_with_einval() -> None:
    with pytest.raises(DecompressError) as err:
        detect(b"\x7fELF\x02")
    assert err.value.errno == errno.EINVAL
    assert MAGIC_PROBE_SIZE == 6


@pytest.mark.parametrize(("data", "message"), [
    (_xz(IMAGE)[:60], "xz: Unexpected end of input"),
    (_xz(IMAGE)[:40] + bytes(b ^ 0x55 for b in _xz(IMAGE)[40:80]) + _xz(IMAGE)[80:],
     "xz: File is corrupt"),
    (_gz(IMAGE)[:30], "gzip: unexpected end of file"),
    (_gz(IMAGE)[:10] + b"\xff" * 8 + _gz(IMAGE)[18:], "gzip: invalid block type"),
])
def test_broken_data_is_reported_in_libkmods_words(data: bytes, message: str) -> None:
    with pytest.raises(DecompressError) as err:
        decompress(data)
    assert err.value.message == message
    assert err.value.errno == errno.EINVAL


def test_a_corrupt_zstd_frame_is_an_error_and_a_cut_one_gives_what_was_decoded() -> None:
    packed = _zst(IMAGE)
    with pytest.raises(DecompressError) as err:
        decompress(packed[:6] + b"\xff\xff\xff" + packed[9:])
    assert err.value.message.startswith("zstd: ")
    # libkmod streams zstd until the input ends and keeps the output so far.
    assert IMAGE.startswith(bytes(decompress(packed[: len(packed) - 5])))


def test_a_file_mapping_is_read_without_copying_it_first() -> None:
    with tempfile.TemporaryFile() as f:
        f.write(_xz(IMAGE))
        f.flush()
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            assert decompress(mapped) == IMAGE
        f.seek(0)
        f.truncate()
        f.write(IMAGE)
        f.flush()
        os.fsync(f.fileno())
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            assert detect(mapped) is Compression.NONE
