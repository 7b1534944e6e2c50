"""ELF images as libkmod reads them (`libkmod/libkmod-elf.c`): the headers, checked once, and
the sections, found by name.

`ElfImage` is the generic layer: ELF32 and ELF64, little- and big-endian; `section()`,
`section_data()` and `strings()` find a section the way libkmod's `elf_find_section` does (the
first valid one of that name). What a kernel module's sections mean (`.modinfo`, the symbol
tables, `__versions`) is `core.modfile.elf`'s `ModuleElf`, built on this one.

Every way the input can be wrong (truncated, not ELF, offsets out of range) raises
`ElfError`, which names the file, the byte offset and the reason, and carries the errno
libkmod reports for it (ENOEXEC when the magic is wrong, EINVAL for a damaged image, ENOENT
for a missing section). Tables are decoded column-wise (`column`): depmod reads about 800,000
symbols on a distribution kernel.
"""

from __future__ import annotations

import errno
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from mmap import mmap
from typing import Literal

ELF_MAGIC = b"\x7fELF"
EI_NIDENT = 16
EI_CLASS, EI_DATA = 4, 5
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
SHN_UNDEF, SHN_ABS = 0, 0xFFF1

class _Layout:
    """Where the fields libkmod reads sit in one ELF class's headers ((offset, width))."""

    __slots__ = ("bits", "e_shentsize", "e_shstrndx", "ehdr_size", "sh_flags", "sh_name",
                 "sh_offset", "sh_size", "shdr_size", "st_info", "st_name", "st_shndx",
                 "sym_size")

    def __init__(self, bits: int) -> None:
        wide = bits == 64
        self.bits = bits
        self.ehdr_size, self.shdr_size, self.sym_size = (64, 64, 24) if wide else (52, 40, 16)
        self.e_shentsize, self.e_shstrndx = (58, 62) if wide else (46, 50)
        self.sh_name = (0, 4)
        self.sh_flags = (8, 8) if wide else (8, 4)
        self.sh_offset = (24, 8) if wide else (16, 4)
        self.sh_size = (32, 8) if wide else (20, 4)
        self.st_name = (0, 4)
        self.st_info = 4 if wide else 12
        self.st_shndx = (6, 2) if wide else (14, 2)


_LAYOUT32 = _Layout(32)
_LAYOUT64 = _Layout(64)

_WIDTH_CODE: dict[int, Literal["H", "I", "Q"]] = {2: "H", 4: "I", 8: "Q"}
#: e_machine, e_shoff, e_shentsize, e_shnum, e_shstrndx in one unpack, per class and order.
_EHDR = {
    (32, False): struct.Struct("<18xH12xI10xHHH"), (32, True): struct.Struct(">18xH12xI10xHHH"),
    (64, False): struct.Struct("<18xH20xQ10xHHH"), (64, True): struct.Struct(">18xH20xQ10xHHH"),
}
#: One section header, per class and order.
_SHDR = {
    (32, False): struct.Struct("<10I"), (32, True): struct.Struct(">10I"),
    (64, False): struct.Struct("<IIQQQQIIQQ"), (64, True): struct.Struct(">IIQQQQIIQQ"),
}
_NATIVE_BIG = sys.byteorder == "big"

Buffer = bytes | bytearray | mmap


class ElfError(Exception):
    """A module image that cannot be read: names the file, the offset and the reason."""

    def __init__(self, path: str, offset: int, reason: str, err: int = errno.EINVAL) -> None:
        super().__init__(f"{path}: offset {offset:#x}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason
        self.errno = err


@dataclass(frozen=True, slots=True)
class Section:
    """One section header, as the file states it."""

    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int



def column(table: bytes, entsize: int, field: tuple[int, int], big: bool) -> list[int]:
    """One integer field of every entry of a table, decoded in bulk."""
    off, width = field
    view = memoryview(table).cast(_WIDTH_CODE[width])
    col = view[off // width :: entsize // width]
    if big == _NATIVE_BIG:
        values: list[int] = col.tolist()
        return values
    arr = array(_WIDTH_CODE[width], col.tobytes())
    arr.byteswap()
    return arr.tolist()


class LazyColumn(Sequence[int]):
    """A column decoded only when first used (depmod's name-only path never uses it)."""

    __slots__ = ("_args", "_values")

    def __init__(self, table: bytes, entsize: int, width: int, big: bool) -> None:
        self._args = (table, entsize, (0, width), big)
        self._values: list[int] | None = None

    def _decoded(self) -> list[int]:
        if self._values is None:
            self._values = column(*self._args)
        return self._values

    def __getitem__(self, k: int) -> int:  # type: ignore[override]
        return self._decoded()[k]

    def __len__(self) -> int:
        return len(self._args[0]) // self._args[1]

    def __iter__(self) -> Iterator[int]:
        return iter(self._decoded())



class ElfImage:
    """A parsed ELF image: its headers and sections. Never changes after construction."""

    __slots__ = (
        "_layout",
        "_names",
        "_offsets",
        "_sections",
        "_shoff",
        "_shstr",
        "_sizes",
        "big_endian",
        "data",
        "machine",
        "path",
        "section_count",
    )

    def __init__(self, data: Buffer, path: str) -> None:
        self.data = data
        self.path = path
        self._sections: tuple[Section, ...] | None = None
        size = len(data)
        if size <= EI_NIDENT or data[:4] != ELF_MAGIC:
            raise ElfError(path, 0, "not an ELF file (bad magic or too short)", errno.ENOEXEC)
        klass, order = data[EI_CLASS], data[EI_DATA]
        if klass == ELFCLASS32:
            layout = _LAYOUT32
        elif klass == ELFCLASS64:
            layout = _LAYOUT64
        else:
            raise ElfError(path, EI_CLASS, f"unknown ELF class {klass}")
        if size <= layout.ehdr_size:
            raise ElfError(path, 0, f"file of {size} bytes is too short for an ELF header")
        if order not in (ELFDATA2LSB, ELFDATA2MSB):
            raise ElfError(path, EI_DATA, f"unknown ELF data encoding {order}")
        self._layout = layout
        big = self.big_endian = order == ELFDATA2MSB
        self.machine, shoff, shentsize, shnum, shstrndx = \
            _EHDR[layout.bits, big].unpack_from(data, 0)
        if shentsize != layout.shdr_size:
            raise ElfError(path, layout.e_shentsize,
                           f"section header size {shentsize}, expected {layout.shdr_size}")
        if shoff + shnum * shentsize > size:
            raise ElfError(path, shoff, f"{shnum} section headers run past the end of the file")
        self._shoff = shoff
        self.section_count = shnum
        table = bytes(data[shoff : shoff + shnum * shentsize])
        self._names = column(table, shentsize, layout.sh_name, big)
        self._offsets = column(table, shentsize, layout.sh_offset, big)
        self._sizes = column(table, shentsize, layout.sh_size, big)
        if shstrndx == SHN_UNDEF or shstrndx >= shnum:
            raise ElfError(path, layout.e_shstrndx,
                           f"section-name table index {shstrndx} out of range")
        if not self._valid(shstrndx):
            raise ElfError(path, self._header_offset(shstrndx),
                           "section-name table runs past the end of the file")
        start = self._offsets[shstrndx]
        self._shstr = bytes(data[start : start + self._sizes[shstrndx]])
        if not self._shstr or self._shstr[-1] != 0:
            raise ElfError(path, start, "section-name table is empty or not NUL-terminated")

    # -- low-level access ---------------------------------------------------------------

    @property
    def bits(self) -> int:
        """32 or 64."""
        return self._layout.bits

    @property
    def byteorder(self) -> Literal["little", "big"]:
        """"little" or "big"."""
        return "big" if self.big_endian else "little"

    def _uint(self, offset: int, width: int) -> int:
        end = offset + width
        if offset < 0 or end > len(self.data):
            raise ElfError(self.path, offset, f"{width}-byte field runs past the end of the file")
        return int.from_bytes(self.data[offset:end], self.byteorder)

    def _header_offset(self, index: int) -> int:
        offset: int = self._shoff + index * self._layout.shdr_size
        return offset

    def _valid(self, index: int) -> bool:
        return self._offsets[index] + self._sizes[index] <= len(self.data)

    def _index_of(self, name: str) -> int:
        """libkmod's `elf_find_section`: the first valid section (from 1) with this name."""
        needle = name.encode("latin-1") + b"\0"
        shstr, names = self._shstr, self._names
        best = -1
        pos = shstr.find(needle)
        while pos >= 0:
            i = 0
            while True:
                try:
                    i = names.index(pos, i + 1)
                except ValueError:
                    break
                if best >= 0 and i > best:
                    break
                if self._valid(i):
                    best = i
                    break
            pos = shstr.find(needle, pos + 1)
        return best

    def _string_at(self, table: bytes, offset: int) -> str:
        end = table.find(b"\0", offset)
        return table[offset : end if end >= 0 else len(table)].decode("latin-1")

    # -- sections -----------------------------------------------------------------------

    def sections(self) -> tuple[Section, ...]:
        """Every section header in file order (names "" when out of range)."""
        if self._sections is None:
            layout = self._layout
            table = bytes(self.data[self._shoff : self._shoff + self.section_count
                                    * layout.shdr_size])
            out = []
            for i, row in enumerate(_SHDR[layout.bits, self.big_endian].iter_unpack(table)):
                nameoff = row[0]
                name = self._string_at(self._shstr, nameoff) if nameoff < len(self._shstr) \
                    else ""
                out.append(Section(i, name, row[1], row[2], row[4], row[5], row[6], row[7],
                                   row[9]))
            self._sections = tuple(out)
        return self._sections

    def section(self, name: str) -> Section | None:
        """The section libkmod would use for `name` (first valid one), or None."""
        i = self._index_of(name)
        return None if i < 0 else self.sections()[i]

    def section_data(self, name: str) -> bytes | None:
        """The bytes of section `name`, or None when there is no such (valid) section."""
        i = self._index_of(name)
        if i < 0:
            return None
        start = self._offsets[i]
        return bytes(self.data[start : start + self._sizes[i]])

    def _require(self, name: str) -> tuple[int, bytes]:
        i = self._index_of(name)
        if i < 0:
            raise ElfError(self.path, 0, f"no section {name}", errno.ENOENT)
        start = self._offsets[i]
        return start, bytes(self.data[start : start + self._sizes[i]])

    # -- .modinfo and string sections ---------------------------------------------------

    def strings(self, name: str) -> list[str]:
        """The NUL-separated strings of a section (`kmod_elf_get_strings`).

        Leading NUL padding is skipped, empty strings are dropped, and a remainder of a single
        byte counts as nothing (libkmod's quirk). Raises ElfError(ENOENT) without the section.
        """
        _, raw = self._require(name)
        rest = raw.lstrip(b"\0")
        if len(rest) <= 1:
            return []
        return [s for s in rest.decode("latin-1").split("\0") if s]
