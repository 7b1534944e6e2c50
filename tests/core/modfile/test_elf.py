"""kmodd.core.modfile.elf: what it reads from module images, and how it refuses broken ones.

The fixtures come from tests/kobuild.py (ELF64 little-endian, as the kernel build makes
them) and from `_image` below, a small writer for the other three ELF flavours libkmod
reads (ELF32, and big-endian ELF32/ELF64).
"""

from __future__ import annotations

import errno
import struct

import pytest

from kmodd.core.modfile.elf import (
    ElfError,
    ExportedSymbol,
    ModinfoEntry,
    ModVersion,
    NeededSymbol,
    parse_module,
    strip_section,
    strip_vermagic,
)
from tests.kobuild import KoSpec, build_ko

# -- a writer for any ELF class and byte order ------------------------------------------


def _image(bits: int, order: str, sections: dict[str, bytes],
           symbols: list[tuple[str, int, int, int]], machine: int = 62) -> bytes:
    """An ELF relocatable: named sections plus .symtab/.strtab/.shstrtab.

    `symbols` are (name, bind, section index (0 = undefined), value); index 1 is the first
    of `sections`.
    """
    e = "<" if order == "little" else ">"
    ehdr_size, shdr_size, sym_size = (52, 40, 16) if bits == 32 else (64, 64, 24)
    names = [*sections, ".symtab", ".strtab", ".shstrtab"]
    shstr = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    name_off = {}
    pos = 1
    for n in names:
        name_off[n] = pos
        pos += len(n) + 1
    strtab = bytearray(b"\0")
    symtab = bytearray(sym_size)
    for name, bind, shndx, value in symbols:
        off = len(strtab)
        strtab += name.encode() + b"\0"
        info = bind << 4
        if bits == 32:
            symtab += struct.pack(e + "IIIBBH", off, value, 0, info, 0, shndx)
        else:
            symtab += struct.pack(e + "IBBHQQ", off, info, 0, shndx, value, 0)
    blobs = [*sections.values(), bytes(symtab), bytes(strtab), shstr]
    body = bytearray(ehdr_size)
    offsets = []
    for blob in blobs:
        while len(body) % 8:
            body.append(0)
        offsets.append(len(body))
        body += blob
    while len(body) % 8:
        body.append(0)
    shoff = len(body)
    headers = bytearray(shdr_size)
    symtab_index = len(sections) + 1
    for i, (name, blob) in enumerate(zip(names, blobs, strict=True)):
        kind = 2 if name == ".symtab" else 3 if name.endswith("strtab") else 1
        link = symtab_index + 1 if name == ".symtab" else 0
        fields = (name_off[name], kind, 2, 0, offsets[i], len(blob), link, 1, 1,
                  sym_size if kind == 2 else 0)
        headers += struct.pack(e + ("IIIIIIIIII" if bits == 32 else "IIQQQQIIQQ"), *fields)
    shnum = len(names) + 1
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1 if order == "little" else 2, 1])
    ident += bytes(16 - len(ident))
    if bits == 32:
        header = ident + struct.pack(e + "HHIIIIIHHHHHH", 1, machine, 1, 0, 0, shoff, 0,
                                     ehdr_size, 0, 0, shdr_size, shnum, shnum - 1)
    else:
        header = ident + struct.pack(e + "HHIQQQIHHHHHH", 1, machine, 1, 0, 0, shoff, 0,
                                     ehdr_size, 0, 0, shdr_size, shnum, shnum - 1)
    body[:ehdr_size] = header
    return bytes(body) + bytes(headers)


def _versions(bits: int, order: str, records: list[tuple[int, str]]) -> bytes:
    crc_fmt = ("<" if order == "little" else ">") + ("I" if bits == 32 else "Q")
    name_len = 60 if bits == 32 else 56
    return b"".join(struct.pack(crc_fmt, crc) + name.encode().ljust(name_len, b"\0")
                    for crc, name in records)


FLAVOURS = [(32, "little"), (32, "big"), (64, "little"), (64, "big")]


# -- modinfo ------------------------------------------------------------------------------


def test_modinfo_comes_in_section_order_split_at_the_first_equals() -> None:
    elf = parse_module(build_ko(KoSpec("m", modinfo=[
        "alias=pci:v*d*", "license=GPL", "parm=debug:a=b", "depends=", "intree"])))
    assert elf.modinfo() == (
        ModinfoEntry("alias", "pci:v*d*"), ModinfoEntry("license", "GPL"),
        ModinfoEntry("parm", "debug:a=b"), ModinfoEntry("depends", ""),
        ModinfoEntry("intree", ""))
    assert elf.modinfo_values("alias") == ["pci:v*d*"]
    assert elf.modinfo_values("intree") == [""]


@pytest.mark.parametrize(("raw", "strings"), [
    (b"\0\0\0a=1\0\0\0b=2\0", ["a=1", "b=2"]),  # leading padding and runs of NULs
    (b"a=1\0b=2", ["a=1", "b=2"]),  # the last string may lack its NUL
    (b"\0\0x", []),  # libkmod: one byte left after the padding counts as nothing
    (b"\0\0\0", []),
    (b"", []),
])
def test_string_sections_are_split_as_libkmod_splits_them(raw: bytes,
                                                          strings: list[str]) -> None:
    elf = parse_module(build_ko(KoSpec("m", extra_sections={".mystrings": raw})))
    assert elf.strings(".mystrings") == strings


def test_a_missing_modinfo_is_an_enoent_error_naming_the_file() -> None:
    data = _image(64, "little", {".text": b"\xc3"}, [])
    with pytest.raises(ElfError) as err:
        parse_module(data, path="/x/m.ko").modinfo()
    assert err.value.errno == errno.ENOENT
    assert err.value.path == "/x/m.ko"
    assert "no section .modinfo" in str(err.value)


# -- exports ------------------------------------------------------------------------------


def test_exports_without_crcs_come_from_ksymtab_strings() -> None:
    elf = parse_module(build_ko(KoSpec("m", exports=["alpha", "beta"])))
    assert elf.exports() == (ExportedSymbol("alpha", 0), ExportedSymbol("beta", 0))


def test_exports_with_crcs_come_from_crc_symbols_and_their_kcrctab_values() -> None:
    elf = parse_module(build_ko(KoSpec("m", exports=["alpha", "beta"],
                                       export_crcs={"beta": 0xDEADBEEF, "alpha": 0x1234})))
    assert elf.exports() == (ExportedSymbol("beta", 0xDEADBEEF), ExportedSymbol("alpha", 0x1234))


def test_a_module_without_exports_has_no_export_list() -> None:
    with pytest.raises(ElfError) as err:
        parse_module(build_ko(KoSpec("m", needs=["x"]))).exports()
    assert err.value.errno == errno.ENOENT


@pytest.mark.parametrize(("bits", "order"), FLAVOURS)
def test_absolute_crc_symbols_carry_their_value_in_every_flavour(bits: int, order: str) -> None:
    shn_abs = 0xFFF1
    data = _image(bits, order, {".text": b"\xc3" * 4},
                  [("__crc_one", 0, shn_abs, 0x11223344), ("one", 1, 1, 0)])
    assert parse_module(data).exports() == (ExportedSymbol("one", 0x11223344),)


@pytest.mark.parametrize(("bits", "order"), FLAVOURS)
def test_section_relative_crcs_are_read_in_the_files_byte_order(bits: int, order: str) -> None:
    e = "<" if order == "little" else ">"
    kcrctab = struct.pack(e + "II", 0xAAAA0001, 0xBBBB0002)
    data = _image(bits, order, {"__kcrctab": kcrctab, ".text": b"\xc3"},
                  [("__crc_b", 0, 1, 4), ("__crc_a", 0, 1, 0), ("__crc_far", 0, 1, 8)])
    assert parse_module(data).exports() == (
        ExportedSymbol("b", 0xBBBB0002), ExportedSymbol("a", 0xAAAA0001),
        ExportedSymbol("far", 0xFFFFFFFFFFFFFFFF))  # past the section: libkmod's (uint64)-1


# -- needed symbols and __versions --------------------------------------------------------


def test_needed_symbols_keep_table_order_weakness_and_versions_crcs() -> None:
    elf = parse_module(build_ko(KoSpec(
        "m", needs=["printk", "kmalloc"], weak_needs=["maybe"],
        versions=[(0x10, "module_layout"), (0x20, "kmalloc"), (0x30, "printk"),
                  (0x40, "printk")])))
    assert elf.needed_symbols() == (
        NeededSymbol("printk", 0x30, False), NeededSymbol("kmalloc", 0x20, False),
        NeededSymbol("maybe", 0, True),
        # records no symbol claimed follow, strong: module_layout, and printk's second one
        NeededSymbol("module_layout", 0x10, False), NeededSymbol("printk", 0x40, False))
    assert elf.needed_names() == ["printk", "kmalloc", "maybe", "module_layout", "printk"]
    assert elf.versions() == (ModVersion(0x10, "module_layout"), ModVersion(0x20, "kmalloc"),
                              ModVersion(0x30, "printk"), ModVersion(0x40, "printk"))


@pytest.mark.parametrize(("bits", "order"), FLAVOURS)
def test_needed_symbols_in_every_flavour(bits: int, order: str) -> None:
    data = _image(bits, order, {
        ".text": b"\xc3",
        "__versions": _versions(bits, order, [(7, "a_sym"), (9, "layout")]),
    }, [("local", 0, 1, 0), ("a_sym", 1, 0, 0), ("w_sym", 2, 0, 0), ("defined", 1, 1, 0)])
    assert parse_module(data).needed_symbols() == (
        NeededSymbol("a_sym", 7, False), NeededSymbol("w_sym", 0, True),
        NeededSymbol("layout", 9, False))


def test_versions_of_odd_size_are_ignored_as_libkmod_ignores_them() -> None:
    elf = parse_module(build_ko(KoSpec("m", needs=["x"],
                                       extra_sections={"__versions": b"\0" * 65})))
    assert elf.versions() == ()
    assert elf.needed_symbols() == (NeededSymbol("x", 0, False),)


def test_sparc_register_symbols_are_not_needs() -> None:
    stt_register = 13
    data = _image(64, "big", {".text": b"\0"}, [("%g7", 1, 0, 0), ("real", 1, 0, 0)],
                  machine=43)
    # Patch the type of the first symbol to STT_REGISTER.
    elf = parse_module(data)
    symtab = elf.section(".symtab")
    assert symtab is not None
    info_at = symtab.offset + 24 + 4
    patched = bytearray(data)
    patched[info_at] = (1 << 4) | stt_register
    assert parse_module(bytes(patched)).needed_names() == ["real"]


# -- sections, this_module, flavours --------------------------------------------------------


@pytest.mark.parametrize(("bits", "order"), FLAVOURS)
def test_class_byte_order_machine_and_sections_are_reported(bits: int, order: str) -> None:
    data = _image(bits, order, {".modinfo": b"license=GPL\0"}, [], machine=2)
    elf = parse_module(data)
    assert (elf.bits, elf.byteorder, elf.machine) == (bits, order, 2)
    assert [s.name for s in elf.sections()] == ["", ".modinfo", ".symtab", ".strtab",
                                                ".shstrtab"]
    assert elf.section_data(".modinfo") == b"license=GPL\0"
    assert elf.modinfo() == (ModinfoEntry("license", "GPL"),)


def test_this_module_name_is_read_from_struct_module() -> None:
    assert parse_module(build_ko(KoSpec("snd_hda_intel"))).this_module_name() == \
        "snd_hda_intel"


def test_the_first_section_of_a_name_wins_and_out_of_range_ones_are_skipped() -> None:
    data = bytearray(_image(64, "little", {".modinfo": b"a=1\0", ".dup": b"b=2\0"}, []))
    elf = parse_module(bytes(data))
    first, second = elf.section(".modinfo"), elf.section(".dup")
    assert first is not None and second is not None
    # Rename .dup to .modinfo by pointing its name at the first one's, then break the first.
    headers = int.from_bytes(data[40:48], "little")
    data[headers + 64 * 2 : headers + 64 * 2 + 4] = data[headers + 64 : headers + 64 + 4]
    assert parse_module(bytes(data)).modinfo() == (ModinfoEntry("a", "1"),)
    data[headers + 64 + 32 : headers + 64 + 40] = (10**9).to_bytes(8, "little")
    assert parse_module(bytes(data)).modinfo() == (ModinfoEntry("b", "2"),)


# -- stripping for init_module ------------------------------------------------------------


def test_strip_section_clears_only_the_alloc_flag_of_versions() -> None:
    data = build_ko(KoSpec("m", versions=[(1, "x")]))
    stripped = strip_section(data, "__versions")
    before, after = parse_module(data), parse_module(stripped)
    assert [s.flags for s in after.sections() if s.name == "__versions"] == [0]
    assert [s for s in before.sections() if s.name != "__versions"] == \
        [s for s in after.sections() if s.name != "__versions"]
    assert len(stripped) == len(data)


def test_strip_vermagic_zeroes_the_string_and_keeps_the_rest() -> None:
    data = build_ko(KoSpec("m", modinfo=["license=GPL", "vermagic=6.1.0 SMP mod_unload",
                                          "name=m"]))
    stripped = strip_vermagic(data)
    assert parse_module(stripped).modinfo() == (ModinfoEntry("license", "GPL"),
                                                ModinfoEntry("name", "m"))
    assert len(stripped) == len(data)


def test_stripping_what_is_not_there_is_an_enoent_error() -> None:
    data = build_ko(KoSpec("m", modinfo=["license=GPL"]))
    with pytest.raises(ElfError) as err:
        strip_section(data, "__versions", path="m.ko")
    assert err.value.errno == errno.ENOENT
    with pytest.raises(ElfError) as err:
        strip_vermagic(data, path="m.ko")
    assert err.value.errno == errno.ENOENT


# -- refusing broken images ---------------------------------------------------------------


@pytest.mark.parametrize(("data", "code", "reason"), [
    (b"", errno.ENOEXEC, "not an ELF file"),
    (b"\x7fELF" + bytes(12), errno.ENOEXEC, "not an ELF file"),
    (b"MZ" + bytes(100), errno.ENOEXEC, "not an ELF file"),
    (b"\x7fELF\x03\x01" + bytes(100), errno.EINVAL, "unknown ELF class 3"),
    (b"\x7fELF\x02\x01" + bytes(40), errno.EINVAL, "too short for an ELF header"),
    (b"\x7fELF\x02\x03" + bytes(100), errno.EINVAL, "unknown ELF data encoding 3"),
])
def test_non_elf_and_bad_headers_are_refused_with_libkmods_errno(
        data: bytes, code: int, reason: str) -> None:
    with pytest.raises(ElfError) as err:
        parse_module(data, path="/m.ko")
    assert err.value.errno == code
    assert reason in err.value.reason
    assert str(err.value).startswith("/m.ko: offset 0x")


def test_a_module_cut_short_is_refused_with_the_offset_of_the_problem() -> None:
    data = build_ko(KoSpec("m", exports=["e"]))
    shoff = int.from_bytes(data[40:48], "little")
    with pytest.raises(ElfError) as err:
        parse_module(data[: len(data) - 10], path="cut.ko")
    assert err.value.errno == errno.EINVAL
    assert err.value.offset == shoff
    assert "section headers run past the end of the file" in err.value.reason
