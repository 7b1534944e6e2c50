"""Broken input never escapes as anything but ElfError / DecompressError.

hypothesis cuts real-looking modules short, flips their bits and feeds random bytes; every
accessor of the parsed image must either answer or raise ElfError naming the file, never
IndexError, struct.error, ValueError, UnicodeError or anything else.
"""

from __future__ import annotations

import lzma
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from kmodd.core.modfile.compression import DecompressError, decompress
from kmodd.core.modfile.elf import ElfError, parse_module, strip_section, strip_vermagic
from tests.kobuild import KoSpec, build_ko

SAMPLE = build_ko(KoSpec(
    "fuzzed", modinfo=["license=GPL", "vermagic=6.1.0 SMP", "alias=pci:v*d*"],
    exports=["e1", "e2"], export_crcs={"e1": 1, "e2": 2}, needs=["n1", "n2"],
    weak_needs=["w1"], versions=[(5, "n1"), (6, "module_layout")]))


def _exercise(data: bytes) -> None:
    try:
        elf = parse_module(data, path="fuzzed.ko")
    except ElfError as exc:
        assert exc.path == "fuzzed.ko"
        return
    for access in (elf.modinfo, elf.exports, elf.needed_symbols, elf.needed_names,
                   elf.versions, elf.sections, elf.this_module_name,
                   lambda: elf.section_data(".modinfo"),
                   lambda: strip_section(data, "__versions"), lambda: strip_vermagic(data)):
        try:
            access()
        except ElfError as exc:
            assert exc.path in ("fuzzed.ko", "<memory>")


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=len(SAMPLE)))
def test_truncated_modules(cut: int) -> None:
    _exercise(SAMPLE[:cut])


@settings(max_examples=500)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(SAMPLE) - 1),
                          st.integers(min_value=1, max_value=255)), min_size=1, max_size=8))
def test_bit_flipped_modules(flips: list[tuple[int, int]]) -> None:
    data = bytearray(SAMPLE)
    for at, mask in flips:
        data[at] ^= mask
    _exercise(bytes(data))


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(b"\x7fELF" + data)


@settings(max_examples=200)
@given(st.binary(max_size=256), st.sampled_from(["xz", "gzip", "zstd"]),
       st.integers(min_value=0, max_value=64))
def test_broken_compressed_data_only_raises_decompress_errors(
        payload: bytes, kind: str, cut: int) -> None:
    if kind == "xz":
        packed = lzma.compress(payload, format=lzma.FORMAT_XZ)
    elif kind == "gzip":
        packed = zlib.compress(payload, wbits=31)
    else:
        import zstandard
        packed = zstandard.ZstdCompressor().compress(payload)
    for data in (packed[: len(packed) - cut], packed[:8] + bytes(reversed(packed[8:]))):
        try:
            out = decompress(data)
        except DecompressError as exc:
            assert exc.message.startswith(("xz: ", "gzip: ", "zstd: ", "file too short"))
        else:
            assert isinstance(out, bytes | bytearray)
