"""Kernel-module ELF images, read the way libkmod reads them (`libkmod/libkmod-elf.c`).

`parse_module(data, path=...)` checks the headers once and returns a `ModuleElf`: a read-only
view that finds sections by name and decodes, on request, what kmod's tools need from a
module: the `.modinfo` strings, the exported symbols (with their CRCs when the module carries
`__crc_<sym>` symbols, else the names in `__ksymtab_strings`), the symbols it needs (undefined
`.symtab` entries, strong or weak, with the CRC `__versions` gives them), the `__versions`
table and the name in `.gnu.linkonce.this_module`. ELF32 and ELF64, little- and big-endian.
`strip_section()` and `strip_vermagic()` produce the images libkmod hands to init_module()
for `--force-modversion` and `--force-vermagic`. The generic ELF layer (headers, sections,
string tables) is `core.modfile.elfimage`'s `ElfImage`, which `ModuleElf` extends.

Every way the input can be wrong (truncated, not ELF, offsets out of range) raises
`ElfError`, which names the file, the byte offset and the reason, and carries the errno
libkmod reports for it (ENOEXEC when the magic is wrong, EINVAL for a damaged image, ENOENT
for a missing section). Where libkmod quietly falls back (no `__crc_` symbols: use
`__ksymtab_strings`; a `__versions` of odd size: ignore it), so does this reader.

Symbol tables are decoded column-wise with `memoryview.cast` and big-integer arithmetic
rather than entry by entry, because depmod reads about 800,000 symbols on a distribution
kernel. Text is decoded as Latin-1 so that `.encode("latin-1")` gives the original bytes.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, compress, islice, repeat
from operator import add, itemgetter

from kmodd.core.modfile.elfimage import (
    SHN_ABS,
    SHN_UNDEF,
    Buffer,
    ElfImage,
    LazyColumn,
    column,
)
from kmodd.core.modfile.elfimage import ElfError as ElfError  # what parse_module raises

SHF_ALLOC = 0x2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_REGISTER = 13  # sparc: "undefined" global registers that are not really undefined
EM_SPARC, EM_SPARCV9 = 2, 43

#: `__versions` records: a CRC (4 bytes on ELF32, 8 on ELF64) and a NUL-padded name, 64 bytes.
MODVERSION_RECORD_SIZE = 64
#: Prefix of the symbols that carry an export's CRC on modversions kernels.
CRC_PREFIX = "__crc_"
#: Offset of `name` in `struct module` (enum state, then a list_head), per ELF class.
THIS_MODULE_NAME_OFFSET = {32: 4 + 2 * 4, 64: 4 + 4 + 2 * 8}
#: MODULE_NAME_LEN = 64 - sizeof(unsigned long), per ELF class.
MODULE_NAME_LEN = {32: 60, 64: 56}
VERMAGIC_PREFIX = b"vermagic="


#: st_value and st_shndx of one symbol entry (in file order), per class and byte order.
_SYM_VALUE_SHNDX = {
    (32, False): struct.Struct("<4xI6xH"), (32, True): struct.Struct(">4xI6xH"),
    (64, False): struct.Struct("<6xHQ"), (64, True): struct.Struct(">6xHQ"),
}
_UNSET: object = object()
#: Bytes that str.split() treats as separators once decoded as Latin-1.
_SPLIT_BLANKS = bytes(c for c in range(256) if chr(c).isspace())
_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")




@dataclass(frozen=True, slots=True)
class ModinfoEntry:
    """One `.modinfo` string, split at its first `=` (a string without one has value "")."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class ExportedSymbol:
    """A symbol the module exports, with its CRC (0 when the module has no CRCs)."""

    name: str
    crc: int


@dataclass(frozen=True, slots=True)
class NeededSymbol:
    """A symbol the module needs: undefined in `.symtab`, or only listed in `__versions`."""

    name: str
    crc: int
    weak: bool


@dataclass(frozen=True, slots=True)
class ModVersion:
    """One `__versions` record."""

    crc: int
    name: str


def _nonzero_u16_mask(table: bytes, entsize: int, off: int, count: int) -> bytes:
    """A byte per entry, 0 where the entry's 16-bit field at `off` is zero."""
    lo = int.from_bytes(table[off::entsize][:count], "little")
    hi = int.from_bytes(table[off + 1 :: entsize][:count], "little")
    return (lo | hi).to_bytes(count, "little")


class ModuleElf(ElfImage):
    """A parsed module image. Construct with `parse_module`; never changes afterwards."""

    __slots__ = (
        "_exports",
        "_needed",
        "_sym_names",
        "_symtab_data",
        "_undefined_data",
        "_versions_data",
    )

    def __init__(self, data: Buffer, path: str) -> None:
        self._symtab_data: object = _UNSET
        self._sym_names: list[int] | None = None
        self._exports: list[tuple[str, int]] | None = None
        self._undefined_data: tuple[list[str], list[int]] | None = None
        self._versions_data: tuple[list[str], Sequence[int]] | None = None
        self._needed: list[tuple[str, int, bool]] | None = None
        super().__init__(data, path)

    # -- .modinfo ---------------------------------------------------------------------------

    def modinfo(self) -> tuple[ModinfoEntry, ...]:
        """The `.modinfo` entries in section order."""
        out = []
        for s in self.strings(".modinfo"):
            key, _, value = s.partition("=")
            out.append(ModinfoEntry(key, value))
        return tuple(out)

    def modinfo_values(self, key: str) -> list[str]:
        """The values of one `.modinfo` key, in order (a bare `key` gives "")."""
        prefix = key + "="
        return [s[len(prefix):] if s != key else "" for s in self.strings(".modinfo")
                if s == key or s.startswith(prefix)]

    # -- symbol tables ------------------------------------------------------------------

    def _symtab(self) -> tuple[bytes, str, int] | None:
        """(.symtab bytes, .strtab as text, entry count), or None when libkmod has none."""
        if self._symtab_data is _UNSET:
            self._symtab_data = self._load_symtab()
        return self._symtab_data  # type: ignore[return-value]

    def _symbol_names(self) -> list[int]:
        """st_name of every `.symtab` entry (the table must exist)."""
        if self._sym_names is None:
            tab = self._symtab()
            assert tab is not None
            layout = self._layout
            self._sym_names = column(tab[0], layout.sym_size, layout.st_name, self.big_endian)
        return self._sym_names

    def _load_symtab(self) -> tuple[bytes, str, int] | None:
        strtab_i = self._index_of(".strtab")
        symtab_i = self._index_of(".symtab")
        if strtab_i < 0 or symtab_i < 0:
            return None
        size = self._sizes[symtab_i]
        if size % self._layout.sym_size:
            return None
        s0 = self._offsets[symtab_i]
        t0 = self._offsets[strtab_i]
        symtab = bytes(self.data[s0 : s0 + size])
        strtab = bytes(self.data[t0 : t0 + self._sizes[strtab_i]]).decode("latin-1")
        return symtab, strtab, size // self._layout.sym_size

    def export_pairs(self) -> list[tuple[str, int]]:
        """`exports()` as plain (name, crc) pairs, for bulk users such as depmod."""
        if self._exports is None:
            self._exports = self._compute_exports()
        return self._exports

    def exports(self) -> tuple[ExportedSymbol, ...]:
        """Exported symbols as libkmod lists them (`kmod_elf_get_symbols`).

        From the `__crc_<sym>` symbols of `.symtab` when there are any, with the CRC read
        from the section they point into (or their value when absolute); otherwise the
        names in `__ksymtab_strings`, with CRC 0. Raises ElfError(ENOENT) when neither exists.
        """
        return tuple(ExportedSymbol(n, c) for n, c in self.export_pairs())

    def _compute_exports(self) -> list[tuple[str, int]]:
        found = self._crc_symbols()
        if found is not None:
            return found
        return [(s, 0) for s in self.strings("__ksymtab_strings")]

    def _crc_symbols(self) -> list[tuple[str, int]] | None:
        tab = self._symtab()
        if tab is None:
            return None
        symtab, strtab, count = tab
        positions = set()
        pos = strtab.find(CRC_PREFIX)
        while pos >= 0:
            positions.add(pos)
            pos = strtab.find(CRC_PREFIX, pos + 1)
        if not positions:
            return None  # no CRC symbols: libkmod falls back
        layout = self._layout
        names = self._symbol_names()
        if count > 1 and max(names) >= len(strtab) and max(islice(names, 1, None)) >= len(strtab):
            return None  # libkmod gives up on .symtab and falls back
        # Symbol 0 is the null symbol: libkmod starts at 1.
        hits = list(compress(range(1, count), map(positions.__contains__,
                                                  islice(names, 1, None))))
        if not hits:
            return None
        # Only the few hits need their value and section: unpack just those entries.
        value_shndx = _SYM_VALUE_SHNDX[layout.bits, self.big_endian]
        size = layout.sym_size
        out = []
        swap = layout.bits == 64  # st_shndx comes before st_value in Elf64_Sym
        for i in hits:
            name = self._string_at_text(strtab, names[i] + len(CRC_PREFIX))
            first, second = value_shndx.unpack_from(symtab, i * size)
            value, shndx = (second, first) if swap else (first, second)
            out.append((name, self._resolve_crc(value, shndx)))
        return out

    @staticmethod
    def _string_at_text(text: str, offset: int) -> str:
        end = text.find("\0", offset)
        return text[offset : end if end >= 0 else len(text)]

    def _resolve_crc(self, value: int, shndx: int) -> int:
        """libkmod's `kmod_elf_resolve_crc`: a CRC is the value, or a u32 the value points at."""
        if shndx in (SHN_ABS, SHN_UNDEF):
            return value
        if shndx >= self.section_count or not self._valid(shndx):
            return 0xFFFFFFFFFFFFFFFF
        size = self._sizes[shndx]
        if size < 4 or value > size - 4:
            return 0xFFFFFFFFFFFFFFFF
        return self._uint(self._offsets[shndx] + value, 4)

    def versions(self) -> tuple[ModVersion, ...]:
        """The `__versions` records (empty when the section is absent or of odd size)."""
        names, crcs = self._version_records()
        return tuple(ModVersion(c, n) for n, c in zip(names, crcs, strict=True))

    def _version_records(self) -> tuple[list[str], Sequence[int]]:
        """The `__versions` names and CRCs, as two parallel lists."""
        if self._versions_data is None:
            self._versions_data = self._decode_versions()
        return self._versions_data

    def _decode_versions(self) -> tuple[list[str], Sequence[int]]:
        i = self._index_of("__versions")
        if i < 0 or self._sizes[i] % MODVERSION_RECORD_SIZE:
            return [], ()
        start, size = self._offsets[i], self._sizes[i]
        raw = bytes(self.data[start : start + size])
        crclen = 4 if self.bits == 32 else 8
        count = size // MODVERSION_RECORD_SIZE
        crcs = LazyColumn(raw, MODVERSION_RECORD_SIZE, crclen, self.big_endian)
        # Blank the CRCs to spaces: the section is then names between runs of blanks and
        # one split decodes them all, unless a name holds a blank itself, is empty, or
        # is unterminated (libkmod then reads on past its 56 bytes): the slow road.
        blanked = bytearray(raw)
        for b in range(crclen):
            blanked[b::MODVERSION_RECORD_SIZE] = bytes(count)
        names: list[str] = []
        last_bytes = raw[MODVERSION_RECORD_SIZE - 1 :: MODVERSION_RECORD_SIZE]
        if len(blanked.translate(None, _SPLIT_BLANKS)) == size and last_bytes.count(0) == count:
            names = blanked.translate(_NUL_TO_SPACE).decode("latin-1").split()
        if len(names) != count:
            names = []
            for k in range(count):
                begin = start + k * MODVERSION_RECORD_SIZE + crclen
                end = self.data.find(b"\0", begin)
                name = bytes(self.data[begin : end if end >= 0 else len(self.data)])
                names.append(name.decode("latin-1"))
        return names, crcs

    def needed_triples(self) -> list[tuple[str, int, bool]]:
        """`needed_symbols()` as plain (name, crc, weak) triples, for bulk users."""
        if self._needed is None:
            self._needed = self._compute_needed()
        return self._needed

    def needed_symbols(self) -> tuple[NeededSymbol, ...]:
        """The symbols the module needs (`kmod_elf_get_dependency_symbols`).

        Every undefined `.symtab` entry with a name, in table order, weak or not, with the CRC
        of the first `__versions` record of that name (0 if none); then, as strong needs, the
        `__versions` records no undefined symbol claimed (e.g. `module_layout`).
        Raises ElfError(EINVAL) without `.symtab`/`.strtab` or with a name out of range.
        """
        return tuple(NeededSymbol(n, c, w) for n, c, w in self.needed_triples())

    def needed_names(self) -> list[str]:
        """The names of `needed_symbols()` alone, in the same order (cheaper: no CRCs)."""
        unames, _ = self._undefined()
        vnames, _ = self._version_records()
        if not vnames:
            return unames
        vset = set(vnames)
        missing = vset - set(unames)
        if not missing and len(vset) == len(vnames):
            return unames
        if len(vset) == len(vnames):  # no name twice: the unclaimed ones are the missing
            return unames + sorted(missing, key=vnames.index)
        _, unclaimed = self._claims(unames, vnames)
        return unames + [vnames[k] for k in unclaimed]

    @staticmethod
    def _claims(unames: list[str], vnames: list[str]) -> tuple[dict[str, int], list[int]]:
        """First record index per `__versions` name, and the records no symbol claimed."""
        count = len(vnames)
        # Built from the reversed list so that earlier records overwrite later ones: libkmod
        # takes the first record of a name (a linear search).
        first = dict(zip(reversed(vnames), range(count - 1, -1, -1), strict=True))
        if not count:
            return first, []
        claimed = {first[n] for n in first.keys() & set(unames)}
        return first, [k for k in range(count) if k not in claimed]

    def _undefined(self) -> tuple[list[str], list[int]]:
        """Names and `.symtab` indices of the undefined, named entries, in table order."""
        if self._undefined_data is None:
            self._undefined_data = self._compute_undefined()
        return self._undefined_data

    def _compute_undefined(self) -> tuple[list[str], list[int]]:
        tab = self._symtab()
        if tab is None:
            raise ElfError(self.path, 0, "no usable .symtab/.strtab")
        symtab, strtab, count = tab
        layout = self._layout
        mask = _nonzero_u16_mask(symtab, layout.sym_size, layout.st_shndx[0], count)
        # Positions of the zero bytes, without a Python-level loop: the lengths of the pieces
        # between them, summed up, plus one per separator passed.
        pieces = mask.split(b"\0")
        undefined = list(map(add, accumulate(map(len, pieces[:-1])), range(len(pieces) - 1)))
        if undefined and undefined[0] == 0:
            undefined.pop(0)  # the null symbol
        if self.machine in (EM_SPARC, EM_SPARCV9):
            info = symtab[layout.st_info :: layout.sym_size]
            undefined = [i for i in undefined if info[i] & 0xF != STT_REGISTER]
        if not undefined:
            return [], []
        names = self._symbol_names()
        offsets = [names[undefined[0]]] if len(undefined) == 1 else \
            list(itemgetter(*undefined)(names))
        limit = len(strtab)
        if max(offsets) >= limit:
            i = next(i for i in undefined if names[i] >= limit)
            at = self._offsets[self._index_of(".symtab")] + i * layout.sym_size
            raise ElfError(self.path, at,
                           f"symbol {i} names offset {names[i]} past .strtab ({limit})")
        text = strtab + "\0"  # a sentinel: every find() below succeeds
        find = text.find
        unames = [text[o : find("\0", o)] for o in offsets]
        if "" in unames:  # libkmod skips nameless entries
            keep = [bool(n) for n in unames]
            unames = list(compress(unames, keep))
            undefined = list(compress(undefined, keep))
        return unames, undefined

    def _weak(self, undefined: list[int]) -> list[bool]:
        """Whether each of these `.symtab` entries is a weak reference."""
        tab = self._symtab()
        assert tab is not None
        layout = self._layout
        info = tab[0][layout.st_info :: layout.sym_size]
        return [info[i] >> 4 == STB_WEAK for i in undefined]

    def _compute_needed(self) -> list[tuple[str, int, bool]]:
        unames, undefined = self._undefined()
        weak = self._weak(undefined)
        vnames, vcrcs = self._version_records()
        first, unclaimed = self._claims(unames, vnames)
        crc_of = {name: vcrcs[k] for name, k in first.items()}
        out = list(zip(unames, map(crc_of.get, unames, repeat(0)), weak, strict=True))
        out.extend((vnames[k], vcrcs[k], False) for k in unclaimed)
        return out

    # -- struct module ------------------------------------------------------------------

    def this_module_name(self) -> str | None:
        """The name in `.gnu.linkonce.this_module` (what the kernel calls the module)."""
        raw = self.section_data(".gnu.linkonce.this_module")
        off = THIS_MODULE_NAME_OFFSET[self.bits]
        if raw is None or len(raw) <= off:
            return None
        field = raw[off : off + MODULE_NAME_LEN[self.bits]]
        return field.split(b"\0", 1)[0].decode("latin-1")


def parse_module(data: Buffer | memoryview, path: str = "<memory>") -> ModuleElf:
    """Check a module image's headers and return a view of it (raises ElfError)."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    return ModuleElf(data, path)


def strip_section(data: bytes, name: str, path: str = "<memory>") -> bytes:
    """A copy of the image with SHF_ALLOC cleared on section `name` (`kmod_elf_strip_section`).

    The kernel then ignores the section; libkmod does this to `__versions` for
    `--force-modversion` on the init_module() path. Raises ElfError(ENOENT) without it.
    """
    elf = parse_module(data, path)
    i = elf._index_of(name)
    if i < 0:
        raise ElfError(path, 0, f"no section {name}", errno.ENOENT)
    off, width = elf._layout.sh_flags
    at = elf._header_offset(i) + off
    flags = elf._uint(at, width) & ~SHF_ALLOC
    out = bytearray(data)
    out[at : at + width] = flags.to_bytes(width, elf.byteorder)
    return bytes(out)


def strip_vermagic(data: bytes, path: str = "<memory>") -> bytes:
    """A copy of the image with the `vermagic=` string of `.modinfo` zeroed.

    libkmod's `kmod_elf_strip_vermagic`, used for `--force-vermagic` on the init_module()
    path. Raises ElfError(ENOENT) without `.modinfo` or without a vermagic string.
    """
    elf = parse_module(data, path)
    start, raw = elf._require(".modinfo")
    # libkmod skips leading NUL padding but always keeps the last byte.
    lead = min(len(raw) - len(raw.lstrip(b"\0")), max(len(raw) - 1, 0))
    strings = raw[lead:]
    size = len(strings)
    if size <= 1:
        return bytes(data)  # libkmod: nothing to strip, and no error
    i = 0
    while i < size:
        if strings[i] == 0 or i + len(VERMAGIC_PREFIX) >= size:
            i += 1
            continue
        end = strings.find(b"\0", i)
        end = size if end < 0 else end
        if not strings.startswith(VERMAGIC_PREFIX, i):
            i = end + 1
            continue
        out = bytearray(data)
        at = start + lead
        out[at + i : at + end] = bytes(end - i)
        return bytes(out)
    raise ElfError(path, start, "no vermagic= string in .modinfo", errno.ENOENT)
