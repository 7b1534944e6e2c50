"""Write real ELF64 x86-64 kernel-module relocatables for tests.

`build_ko(...)` returns the bytes of a `.ko` whose layout follows what the kernel build produces
for Linux 6.1: `.modinfo` strings, `__ksymtab_strings` for exports (and LOCAL `__crc_<sym>`
symbols into `__kcrctab` when export CRCs are given, as modversions builds have), undefined
(strong or weak) `.symtab` entries for the symbols the module needs, `__versions` records of
64 bytes (u64 crc + 56-byte name), and `.gnu.linkonce.this_module` with the module name at
offset 24 of `struct module`. The real kmod tools (depmod, modinfo, modprobe) read these files,
which is what makes them fit for differential tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

EM_X86_64 = 62
ET_REL = 1
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 1, 2, 3
SHF_ALLOC, SHF_WRITE, SHF_EXECINSTR = 0x2, 0x1, 0x4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_FUNC = 0, 2
THIS_MODULE_SIZE = 0x380  # sizeof(struct module) on Debian's 6.1 x86-64 build
THIS_MODULE_NAME_OFFSET = 24  # enum state (4) + pad (4) + struct list_head (16)
MODULE_NAME_LEN = 56  # 64 - sizeof(unsigned long)


@dataclass
class KoSpec:
    """What goes into a fixture module."""

    name: str
    modinfo: Sequence[str] = ()  # "key=value" strings, in section order
    exports: Sequence[str] = ()
    export_crcs: Mapping[str, int] = field(default_factory=dict)
    needs: Sequence[str] = ()  # undefined, strong
    weak_needs: Sequence[str] = ()  # undefined, weak
    versions: Sequence[tuple[int, str]] = ()  # __versions records (crc, symbol)
    extra_sections: Mapping[str, bytes] = field(default_factory=dict)


class _StrTab:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self.offsets: dict[str, int] = {"": 0}

    def add(self, s: str) -> int:
        if s not in self.offsets:
            self.offsets[s] = len(self.data)
            self.data += s.encode() + b"\0"
        return self.offsets[s]


def _modinfo_bytes(items: Iterable[str]) -> bytes:
    return b"".join(s.encode() + b"\0" for s in items)


def build_ko(spec: KoSpec) -> bytes:
    """The bytes of an ELF relocatable module described by `spec`."""
    sections: list[tuple[str, int, int, bytes, int]] = []  # name, type, flags, data, align

    def add(name: str, data: bytes, *, typ: int = SHT_PROGBITS, flags: int = SHF_ALLOC,
            align: int = 1) -> int:
        sections.append((name, typ, flags, data, align))
        return len(sections)  # index, counting the NULL section at 0

    text_idx = add(".text", b"\xc3" * 16, flags=SHF_ALLOC | SHF_EXECINSTR, align=16)
    add(".modinfo", _modinfo_bytes(spec.modinfo))
    if spec.exports:
        add("__ksymtab_strings", b"".join(e.encode() + b"\0" for e in spec.exports))
    kcrctab_idx = 0
    crc_offsets: dict[str, int] = {}
    if spec.export_crcs:
        blob = bytearray()
        for sym, crc in spec.export_crcs.items():
            crc_offsets[sym] = len(blob)
            blob += struct.pack("<I", crc & 0xFFFFFFFF)
        kcrctab_idx = add("__kcrctab", bytes(blob), align=4)
    if spec.versions:
        blob = bytearray()
        for crc, sym in spec.versions:
            raw = sym.encode()[: MODULE_NAME_LEN - 1]
            blob += struct.pack("<Q", crc) + raw + b"\0" * (MODULE_NAME_LEN - len(raw))
        add("__versions", bytes(blob), align=32)
    for sname, sdata in spec.extra_sections.items():
        add(sname, sdata)
    this_module = bytearray(THIS_MODULE_SIZE)
    raw_name = spec.name.encode()[: MODULE_NAME_LEN - 1]
    this_module[THIS_MODULE_NAME_OFFSET : THIS_MODULE_NAME_OFFSET + len(raw_name)] = raw_name
    add(".gnu.linkonce.this_module", bytes(this_module), flags=SHF_ALLOC | SHF_WRITE, align=64)

    strtab = _StrTab()
    local_syms: list[tuple[int, int, int, int, int]] = []  # name, info, shndx, value, size
    for sym, off in crc_offsets.items():
        local_syms.append((strtab.add("__crc_" + sym), STB_LOCAL << 4 | STT_NOTYPE,
                           kcrctab_idx, off, 0))
    global_syms: list[tuple[int, int, int, int, int]] = []
    for sym in spec.exports:
        global_syms.append((strtab.add(sym), STB_GLOBAL << 4 | STT_FUNC, text_idx, 0, 1))
    for sym in spec.needs:
        global_syms.append((strtab.add(sym), STB_GLOBAL << 4 | STT_NOTYPE, 0, 0, 0))
    for sym in spec.weak_needs:
        global_syms.append((strtab.add(sym), STB_WEAK << 4 | STT_NOTYPE, 0, 0, 0))
    symtab = bytearray(24)  # the NULL symbol
    for name_off, info, shndx, value, size in local_syms + global_syms:
        symtab += struct.pack("<IBBHQQ", name_off, info, 0, shndx, value, size)
    strtab_idx = len(sections) + 2  # .symtab comes next, then .strtab
    sections.append((".symtab", SHT_SYMTAB, 0, bytes(symtab), 8))
    symtab_pos = len(sections) - 1
    sections.append((".strtab", SHT_STRTAB, 0, bytes(strtab.data), 1))
    shstr = _StrTab()
    name_offsets = [shstr.add(s[0]) for s in sections]
    shstrtab_name = shstr.add(".shstrtab")
    sections.append((".shstrtab", SHT_STRTAB, 0, bytes(shstr.data), 1))
    name_offsets.append(shstrtab_name)

    body = bytearray(64)
    headers = [bytes(64)]  # NULL section header
    for i, (_name, typ, flags, data, align) in enumerate(sections):
        while len(body) % align:
            body += b"\0"
        offset = len(body)
        body += data
        link = info = entsize = 0
        if i == symtab_pos:
            link, info, entsize = strtab_idx, 1 + len(local_syms), 24
        headers.append(struct.pack("<IIQQQQIIQQ", name_offsets[i], typ, flags, 0, offset,
                                   len(data), link, info, align, entsize))
    while len(body) % 8:
        body += b"\0"
    shoff = len(body)
    shnum = len(headers)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", ET_REL, EM_X86_64, 1, 0, 0, shoff, 0, 64,
                                 0, 0, 64, shnum, shnum - 1)
    body[:64] = header
    return bytes(body) + b"".join(headers)


def write_ko(path: str, spec: KoSpec) -> str:
    """Write `spec` as a .ko file at `path` (parent directories must exist); return the path."""
    with open(path, "wb") as f:
        f.write(build_ko(spec))
    return path
