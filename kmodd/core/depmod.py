"""depmod's algorithm, pure: module facts in, the contents of the index files out.

This follows kmod 30's `tools/depmod.c` step by step, because byte identity with its output
depends on its orders:

1. Modules are first kept in the iteration order of kmod's name hash (`hash_superfast`,
   512 buckets, keys sorted within a bucket), then sorted stably by their position in
   `modules.order`; modules not listed there keep that hash order after the listed ones.
   The position in the result is each module's *priority* in the `.bin` indexes.
2. Symbols: each module's exports, in that order, overwrite earlier owners of the same name.
3. Dependencies: every needed symbol with an owning module adds that owner once, in the
   order the module needs them (weak references included).
4. A topological sort (Kahn's, popping the most recently freed module first) numbers the
   modules; a module's `modules.dep` line lists its transitive dependencies by that number.
   Leftover modules mean cycles: they are reported the way kmod walks them, and nothing is
   written.
5. `modules.symbols` lists the symbols in the iteration order of kmod's symbol hash
   (2048 buckets), which is reproduced here, so even that file is byte-identical.

kmod 30 writes no `modules.weakdep` (weakdep arrived in kmod 33); neither does this.
Text is Latin-1 strings throughout (one character per byte of the files and paths).
"""

from __future__ import annotations

import errno
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat

from kmodd.core import compression
from kmodd.core.depmod_config import Level, Message
from kmodd.core.elf import ElfError, parse_module
from kmodd.core.normalize import modname_normalize

#: kmod's hash tables (shared/hash.c): buckets per table, rounded to a power of two.
MODULES_BY_NAME_BUCKETS = 512
SYMBOL_BUCKETS = 2048
#: Symbols the kernel provides to every module (added only with -E or -F, as kmod does).
FAKE_SYMBOLS = ("__this_module", "_GLOBAL_OFFSET_TABLE_")
PPC64_TOC_SYMBOL = "TOC."
#: modinfo keys that depmod reads.
ALIAS_KEY, SOFTDEP_KEY = "alias", "softdep"
#: kmod reads modules.order with fgets() into a PATH_MAX buffer.
PATH_MAX = 4096
#: The files depmod writes, in its order (the `.bin` ones are skipped with -n).
OUTPUT_FILES = (
    "modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin",
    "modules.softdep", "modules.symbols", "modules.symbols.bin", "modules.builtin.bin",
    "modules.builtin.alias.bin", "modules.devname",
)

_M32 = 0xFFFFFFFF
#: What strtoull(s, &end, 16) consumes entirely.
_STRTOULL_HEX = re.compile(r"[ \t\n\v\f\r]*(?P<sign>[+-]?)(?:0[xX])?(?P<digits>[0-9a-fA-F]+)")


def kmod_hash(key: bytes) -> int:
    """kmod's `hash_superfast` (Paul Hsieh's SuperFastHash) of a key, as on x86.

    Arithmetic is on unbounded ints, masked to 32 bits only before each right shift (the
    bits above 32 cannot reach the low 32 bits through additions, xors and left shifts).
    """
    n = len(key)
    h = n
    words = n >> 2
    if words:
        halves = iter(struct.unpack_from(f"<{words * 2}H", key))
        for lo, hi in zip(halves, halves, strict=True):
            h += lo
            h = ((h << 16) ^ (hi << 11) ^ h) & _M32
            h += h >> 11
    rem = n & 3
    if rem:
        tail = key[words * 4 :]
        if rem == 3:
            h += tail[0] | tail[1] << 8
            h = (h ^ (h << 16)) & _M32
            h ^= ((tail[2] - 256 if tail[2] > 127 else tail[2]) << 18) & _M32  # signed char
            h += h >> 11
        elif rem == 2:
            h += tail[0] | tail[1] << 8
            h = (h ^ (h << 11)) & _M32
            h += h >> 17
        else:
            h += tail[0] - 256 if tail[0] > 127 else tail[0]  # signed char
            h = (h ^ (h << 10)) & _M32
            h += h >> 1
    h = (h ^ (h << 3)) & _M32
    h += h >> 5
    h = (h ^ (h << 4)) & _M32
    h += h >> 17
    h = (h ^ (h << 25)) & _M32
    h += h >> 6
    return h & _M32


_LANE = 8  # bytes per key in the lane-parallel hash: 32-bit state plus headroom


def kmod_hashes(keys: Sequence[bytes]) -> list[int]:
    """`kmod_hash` of many keys at once: keys of one length share every step, so their
    states are packed into the 64-bit lanes of one big integer and advanced together
    (SIMD within a register). Each step masks the lanes back to 32 bits before bits could
    cross into a neighbour. Keys with bytes above 127 (signed char) take the scalar road."""
    out = [0] * len(keys)
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(len(key), []).append(i)
    for length, members in groups.items():
        blob = b"".join([keys[i] for i in members])
        if length == 0 or not blob.isascii() or len(members) < 4:
            for i in members:
                out[i] = kmod_hash(keys[i])
            continue
        for i, h in zip(members, _lane_hash(blob, length, len(members)), strict=True):
            out[i] = h
    return out


def _lane_hash(blob: bytes, length: int, n: int) -> list[int]:
    mask = int.from_bytes(b"\xff\xff\xff\xff\0\0\0\0" * n, "little")

    def column(offset: int, width: int) -> int:
        lanes = bytearray(_LANE * n)
        lanes[0::_LANE] = blob[offset::length]
        if width == 2:
            lanes[1::_LANE] = blob[offset + 1 :: length]
        return int.from_bytes(lanes, "little")

    h = int.from_bytes(length.to_bytes(_LANE, "little") * n, "little")
    words = length >> 2
    for k in range(words):
        h += column(4 * k, 2)
        h = ((h << 16) ^ (column(4 * k + 2, 2) << 11) ^ h) & mask
        h += (h >> 11) & mask
    rem = length & 3
    at = 4 * words
    if rem == 3:
        h += column(at, 2)
        h = (h ^ (h << 16)) & mask
        h ^= column(at + 2, 1) << 18
        h += (h >> 11) & mask
    elif rem == 2:
        h += column(at, 2)
        h = (h ^ (h << 11)) & mask
        h += (h >> 17) & mask
    elif rem == 1:
        h += column(at, 1)
        h = (h ^ (h << 10)) & mask
        h += (h >> 1) & mask
    h = (h ^ (h << 3)) & mask
    h += (h >> 5) & mask
    h = (h ^ (h << 4)) & mask
    h += (h >> 17) & mask
    h = (h ^ (h << 25)) & mask
    h += (h >> 6) & mask
    h &= mask
    values: list[int] = memoryview(h.to_bytes(_LANE * n, "little")).cast("Q").tolist()
    return values


def hash_order(modules: Sequence[DepmodModule]) -> list[int]:
    """Module positions in the iteration order of kmod's `modules_by_name` hash."""
    names = [m.modname.encode("latin-1") for m in modules]
    hashes = kmod_hashes(names)
    mask = MODULES_BY_NAME_BUCKETS - 1
    return sorted(range(len(modules)), key=lambda i: (hashes[i] & mask, names[i]))


# -- what one module file tells depmod --------------------------------------------------


@dataclass(frozen=True, slots=True)
class FactsOptions:
    """What to extract beyond names: CRCs for -E, bind strength for -e."""

    sym_prefix: str = ""
    crcs: bool = False
    weak: bool = False


@dataclass(frozen=True, slots=True)
class ModuleFacts:
    """What depmod reads from one module file (empty parts where libkmod's reads failed)."""

    aliases: tuple[str, ...] = ()
    softdeps: tuple[str, ...] = ()
    exports: tuple[str, ...] = ()  # after -P prefix stripping
    export_crcs: tuple[int, ...] = ()
    needs: tuple[str, ...] = ()
    need_crcs: tuple[int, ...] = ()  # only with FactsOptions.crcs
    need_weak: tuple[bool, ...] = ()  # only with FactsOptions.crcs or .weak
    dotted: bool = False  # some needed name starts with "." (PPC64 function descriptors)
    messages: tuple[Message, ...] = ()  # what loading the module logs, in kmod's order


def module_facts(raw: compression.Buffer | None, path: str, options: FactsOptions,
                 open_errno: int = 0) -> ModuleFacts:
    """Read a module file's contents the way depmod's `depmod_load_modules` does.

    A file libkmod cannot open or decode gives one "failed to load symbols" error with the
    errno libkmod returns (libkmod's own decompression messages never show: kmod 30 logs
    them through a context it has not attached yet). `raw` is None when the file could
    not be read at all (`open_errno` says why).
    """
    messages: list[Message] = []
    image: compression.Buffer | None = None
    err = open_errno
    if raw is not None:
        try:
            image = compression.decompress(raw)
        except compression.DecompressError as exc:
            err = exc.errno
    elf = None
    if image is not None:
        try:
            elf = parse_module(image, path)
        except ElfError as exc:
            err = exc.errno
    exports: list[tuple[str, int]] = []
    if elf is None:
        if err != errno.ENOENT:
            messages.append(Message(
                Level.ERROR, f"failed to load symbols from {path}: {os.strerror(err)}\n"))
        return ModuleFacts(messages=tuple(messages))
    try:
        exports = elf.export_pairs()
    except ElfError as exc:
        if exc.errno != errno.ENOENT:
            messages.append(Message(
                Level.ERROR, f"failed to load symbols from {path}: {os.strerror(exc.errno)}\n"))
    try:
        strings = elf.strings(".modinfo")
    except ElfError:
        strings = []
    joined = "\0".join(strings)  # one C-level scan tells which keys are there at all
    aliases = _values(strings, ALIAS_KEY) if ALIAS_KEY in joined else ()
    softdeps = _values(strings, SOFTDEP_KEY) if SOFTDEP_KEY in joined else ()
    needs: list[str] = []
    need_crcs: list[int] = []
    need_weak: list[bool] = []
    try:
        if options.crcs or options.weak:
            for name, crc, weak in elf.needed_triples():
                needs.append(name)
                need_crcs.append(crc)
                need_weak.append(weak)
        else:
            needs = elf.needed_names()
    except ElfError:
        needs, need_crcs, need_weak = [], [], []
    prefix = options.sym_prefix
    names = [n[1:] if prefix and n[:1] == prefix else n for n, _ in exports]
    needs_tuple = tuple(needs)
    return ModuleFacts(
        aliases=aliases, softdeps=softdeps, exports=tuple(names),
        export_crcs=tuple(c for _, c in exports), needs=needs_tuple,
        need_crcs=tuple(need_crcs) if options.crcs else (), need_weak=tuple(need_weak),
        dotted="\0." in "\0" + "\0".join(needs_tuple), messages=tuple(messages))


def _values(strings: list[str], key: str) -> tuple[str, ...]:
    """The values of one modinfo key, in order; a bare `key` string has value ""."""
    prefix = key + "="
    cut = len(prefix)
    return tuple(s[cut:] if s != key else "" for s in strings
                 if s == key or s.startswith(prefix))


# -- the modules and their order ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepmodModule:
    """A module depmod keeps: its name, libkmod's absolute path, the path relative to the
    module directory (None outside it, e.g. external directories) and that relative path
    with `.ko` in place of a compression suffix (what modules.order lines match)."""

    modname: str
    path: str
    relpath: str | None
    uncrelpath: str | None

    @property
    def output_path(self) -> str:
        """How modules.dep names the module: relative when possible, else absolute."""
        return self.relpath if self.relpath is not None else self.path


def depmod_module(abspath: str, dirname: str) -> DepmodModule:
    """Describe a module file the way `depmod_module_add` does."""
    slash = abspath.rfind("/")
    modname = modname_normalize(abspath[slash + 1 :])
    relpath = uncrelpath = None
    dlen = len(dirname)
    if abspath.startswith(dirname) and abspath[dlen : dlen + 1] == "/":
        relpath = abspath[dlen + 1 :]
        # kmod copies the directory part, the name's first len(modname) characters and
        # 3 more (".ko"): "x.ko.xz" gives "x.ko".
        base = slash - (dlen + 1) + 1
        uncrelpath = relpath[: base + len(modname) + 3]
    return DepmodModule(modname, abspath, relpath, uncrelpath)


def modules_order(modules: Sequence[DepmodModule], order: bytes | None,
                  dirname: str) -> tuple[list[int], list[Message]]:
    """The modules' positions after `depmod_modules_sort` (indices into `modules`).

    `modules` may come in any order; `order` is modules.order's contents (None: missing).
    """
    messages: list[Message] = []
    if order is None:
        return hash_order(modules), messages
    chunks = fgets_chunks(order)
    for lineno, chunk in enumerate(chunks, 1):
        nul = chunk.find(b"\0")
        text = chunk if nul < 0 else chunk[:nul]
        if text and not text.endswith(b"\n"):
            messages.append(Message(
                Level.ERROR, f"{dirname}/modules.order:{lineno} corrupted line misses '\\n'\n"))
            return hash_order(modules), messages
    by_unc = {m.uncrelpath: i for i, m in enumerate(modules) if m.uncrelpath is not None}
    total = len(chunks) + 1
    sort_idx = [1] * len(modules)
    for lineno, chunk in enumerate(chunks, 1):
        nul = chunk.find(b"\0")
        text = chunk if nul < 0 else chunk[:nul]
        if not text:
            continue
        i = by_unc.get(text[:-1].decode("latin-1"))
        if i is not None:
            sort_idx[i] = lineno - total  # the last listing of a module wins
    if all(s < 1 for s in sort_idx):  # all listed: the starting order does not matter
        return sorted(range(len(modules)), key=sort_idx.__getitem__), messages
    # glibc's qsort is a merge sort here: stable, so unlisted modules keep hash order.
    return sorted(hash_order(modules), key=sort_idx.__getitem__), messages


def fgets_chunks(data: bytes, size: int = PATH_MAX) -> list[bytes]:
    """What successive fgets() calls with a `size`-byte buffer return."""
    chunks = []
    start, n = 0, len(data)
    while start < n:
        newline = data.find(b"\n", start)
        end = n if newline < 0 else newline + 1
        while end - start > size - 1:
            chunks.append(data[start : start + size - 1])
            start += size - 1
        chunks.append(data[start:end])
        start = end
    return chunks


# -- symbols and dependencies ---------------------------------------------------------


@dataclass(slots=True)
class _Symbol:
    owner: int  # module position, -1 for the kernel (System.map, Module.symvers, fakes)
    crc: int


@dataclass(frozen=True, slots=True)
class KernelSymbols:
    """Symbols the kernel itself exports (from -F System.map or -E Module.symvers)."""

    crcs: dict[str, int] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()


def parse_symvers(data: bytes, path: str, sym_prefix: str = "") -> KernelSymbols:
    """`depmod_load_symvers`: `0xCRC<tab>symbol<tab>vmlinux<tab>...` lines."""
    crcs: dict[str, int] = {}
    messages: list[Message] = []
    for lineno, line in enumerate(_fgets_lines(data, 10240), 1):
        fields = [f for f in line.replace("\t", " ").split(" ") if f]
        if len(fields) < 3 or fields[2] != "vmlinux":
            continue
        ver, sym = fields[0], fields[1]
        number = _STRTOULL_HEX.fullmatch(ver)
        if number is None:
            # kmod appends %m, which shows an errno left over from its start-up lookups.
            messages.append(Message(Level.ERROR, f"{path}:{lineno} Invalid symbol version "
                                                 f"{ver}: {os.strerror(errno.ENOENT)}\n"))
            continue
        crc = int(number["sign"] + number["digits"], 16) & 0xFFFFFFFFFFFFFFFF
        if sym_prefix and sym[:1] == sym_prefix:
            sym = sym[1:]
        crcs[sym] = crc
    _add_fake_symbols(crcs)
    return KernelSymbols(crcs, tuple(messages))


def parse_system_map(data: bytes, path: str, sym_prefix: str = "") -> KernelSymbols:
    """`depmod_load_system_map`: the `__ksymtab_<sym>` lines of a System.map."""
    crcs: dict[str, int] = {}
    messages: list[Message] = []
    marker = "__ksymtab_"
    for lineno, line in enumerate(_fgets_lines(data, 10240), 1):
        first = line.find(" ")
        second = line.find(" ", first + 1) if first >= 0 else -1
        if second < 0:
            messages.append(Message(Level.ERROR, f"{path}:{lineno}: invalid line: {line}\n"))
            continue
        name = line[second + 1 :]
        if sym_prefix and name[:1] == sym_prefix:
            name = name[1:]
        if not name.startswith(marker):
            continue
        crcs[name[len(marker) :].split("\n", 1)[0]] = 0
    _add_fake_symbols(crcs)
    return KernelSymbols(crcs, tuple(messages))


def _fgets_lines(data: bytes, size: int) -> list[str]:
    """fgets() chunks as C strings (cut at a NUL), decoded."""
    out = []
    for chunk in fgets_chunks(data, size):
        nul = chunk.find(b"\0")
        out.append((chunk if nul < 0 else chunk[:nul]).decode("latin-1"))
    return out


def _add_fake_symbols(crcs: dict[str, int]) -> None:
    for name in FAKE_SYMBOLS:
        crcs[name] = 0
    crcs.setdefault(PPC64_TOC_SYMBOL, 0)


@dataclass(frozen=True, slots=True)
class DepmodOptions:
    """The command-line switches that change depmod's computation."""

    sym_prefix: str = ""
    print_unknown: bool = False  # -e (with -E or -F)
    check_symvers: bool = False  # -E
    warn_dups: bool = False  # -w
    verbose: bool = False  # -v: report each dependency on stdout
    to_stdout: bool = False  # -n: text files only


@dataclass(frozen=True, slots=True)
class OutputEvent:
    """A log message, or a line for stdout (`show`), in the order depmod emits them."""

    message: Message | None = None
    show: str = ""


@dataclass(frozen=True, slots=True)
class DependencyGraph:
    """Who depends on whom, in module positions (see `resolve_dependencies`)."""

    deps: tuple[tuple[int, ...], ...]  # direct dependencies, in the order they were found
    dep_sort_idx: tuple[int, ...]  # topological number: users before what they use
    symbols: tuple[tuple[int, bytes, int], ...]  # (hash bucket, name, owner) of each export


def resolve_dependencies(
    modules: Sequence[DepmodModule],
    facts: Sequence[ModuleFacts],
    kernel: KernelSymbols | None,
    options: DepmodOptions,
) -> tuple[DependencyGraph | None, list[OutputEvent]]:
    """Load symbols, link needs to owners and sort (`depmod_load`).

    `modules` and `facts` are in depmod's sorted order. Returns None for the graph when
    there are dependency cycles (they are reported in the events).
    """
    events: list[OutputEvent] = []
    # Who owns each exported symbol: later modules overwrite earlier ones, as kmod's
    # hash_add does; the kernel's own symbols (System.map, Module.symvers) own nothing.
    owner_of: dict[str, int] = {}
    for idx, f in enumerate(facts):
        events.extend(OutputEvent(m) for m in f.messages)
        owner_of.update(zip(f.exports, repeat(idx)))
    n = len(modules)
    deps: list[list[int]] = [[] for _ in range(n)]
    users = [0] * n
    detailed = options.print_unknown or options.check_symvers or options.verbose or \
        options.sym_prefix
    if detailed:
        symbols = _symbol_table(facts, kernel)
        for idx, f in enumerate(facts):
            if f.needs:
                _link(idx, f, modules, symbols, deps[idx], users, options, events)
    else:
        get = owner_of.get
        for idx, f in enumerate(facts):
            if not f.needs:
                continue
            needs = f.needs if not f.dotted else [n[1:] if n[:1] == "." else n
                                                  for n in f.needs]
            # The owners, each once, in the order first needed; kernel symbols and unknown
            # ones have none.
            found = dict.fromkeys(map(get, needs))
            found.pop(None, None)
            mine = deps[idx] = list(found)  # type: ignore[arg-type]
            for owner in mine:
                users[owner] += 1
    dep_sort_idx, leftover = _topological_sort(deps, users)
    if leftover is not None:
        events.extend(OutputEvent(m) for m in _report_cycles(modules, deps, leftover))
        return None, events
    names = [name.encode("latin-1") for name in owner_of]
    buckets = [h & (SYMBOL_BUCKETS - 1) for h in kmod_hashes(names)]
    owned = tuple(zip(buckets, names, owner_of.values(), strict=True))
    graph = DependencyGraph(tuple(tuple(d) for d in deps), tuple(dep_sort_idx), owned)
    return graph, events


def _symbol_table(facts: Sequence[ModuleFacts],
                  kernel: KernelSymbols | None) -> dict[str, _Symbol]:
    """Every symbol with its owner (-1: the kernel) and CRC, for the detailed checks."""
    symbols: dict[str, _Symbol] = {}
    if kernel is not None:
        for name, crc in kernel.crcs.items():
            symbols[name] = _Symbol(-1, crc)
    for idx, f in enumerate(facts):
        for name, crc in zip(f.exports, f.export_crcs, strict=True):
            symbols[name] = _Symbol(idx, crc)
    return symbols


def _link(idx: int, f: ModuleFacts, modules: Sequence[DepmodModule],
          symbols: dict[str, _Symbol], mine: list[int], users: list[int],
          options: DepmodOptions, events: list[OutputEvent]) -> None:
    """`depmod_load_module_dependencies` for one module."""
    prefix = options.sym_prefix
    get = symbols.get
    for k, name in enumerate(f.needs):
        look = name[1:] if name[:1] == "." else name  # PPC64: .foo is foo
        if prefix and look[:1] == prefix:
            look = look[1:]
        sym = get(look)
        weak = f.need_weak[k] if f.need_weak else False
        if sym is None:
            if options.print_unknown and not weak:
                events.append(OutputEvent(Message(
                    Level.WARNING, f"{modules[idx].path} needs unknown symbol {name}\n")))
            continue
        if options.check_symvers and options.print_unknown and not weak and f.need_crcs \
                and sym.crc != f.need_crcs[k]:
            events.append(OutputEvent(Message(
                Level.WARNING,
                f"{modules[idx].path} disagrees about version of symbol {name}\n")))
        owner = sym.owner
        if owner < 0 or owner in mine:
            continue
        mine.append(owner)
        users[owner] += 1
        if options.verbose:
            events.append(OutputEvent(
                show=f'{modules[idx].path} needs "{look}": {modules[owner].path}\n'))


def _topological_sort(deps: list[list[int]],
                      users: list[int]) -> tuple[list[int], list[int] | None]:
    """kmod's sort: numbers from the modules nobody uses, last freed first. Returns the
    numbers, and the remaining user counts when some modules could not be numbered."""
    n = len(deps)
    left = list(users)
    roots = [i for i in range(n) if left[i] == 0]
    dep_sort_idx = [0x7FFFFFFF] * n
    count = 0
    while roots:
        src = roots.pop()
        dep_sort_idx[src] = count
        count += 1
        for dst in deps[src]:
            left[dst] -= 1
            if left[dst] == 0:
                roots.append(dst)
    return dep_sort_idx, (left if count < n else None)


@dataclass(frozen=True, slots=True)
class _Vertex:
    module: int
    parent: _Vertex | None


def _ring_remove(ring: list[int], module: int) -> None:
    """kmod's `kmod_list_remove_data` on its circular list: the element after the removed
    one becomes the head (`ring[0]`), so later walks start from there."""
    try:
        at = ring.index(module)
    except ValueError:
        return
    del ring[at]
    if ring and at:
        ring[:] = ring[at % len(ring) :] + ring[: at % len(ring)]


def _loop_back_to(vertex: _Vertex) -> list[int]:
    """The modules from an earlier visit of vertex's module on its own path down to
    vertex's parent ([] when the module is not on its path)."""
    chain = []
    v = vertex.parent
    while v is not None:
        chain.append(v.module)
        if v.module == vertex.module:
            chain.reverse()
            return chain
        v = v.parent
    return []


def _report_cycles(modules: Sequence[DepmodModule], deps: list[list[int]],
                   users: list[int]) -> list[Message]:
    """`depmod_report_cycles`: walk from each module still in use, report each return to
    the starting module, then count the modules seen in cycles. The walks start in the
    order of kmod's circular list of such modules, whose head moves on every removal."""
    roots = [i for i in range(len(modules)) if users[i] > 0]
    visited = [False] * len(modules)
    in_loops: set[str] = set()
    hang_reports: set[str] = set()
    messages: list[Message] = []
    while roots:
        root = roots.pop(0)
        stack = [_Vertex(root, None)]
        while stack:
            vertex = stack.pop()
            m = vertex.module
            if visited[m] and m == root:
                chain = []
                v = vertex.parent
                while v is not None:
                    chain.append(v.module)
                    in_loops.add(modules[v.module].modname)
                    v = v.parent
                chain.reverse()
                for c in chain:
                    _ring_remove(roots, c)
                text = " -> ".join([*(modules[c].modname for c in chain), modules[m].modname])
                messages.append(Message(Level.ERROR, f"Cycle detected: {text}\n"))
                continue
            visited[m] = True
            if not deps[m]:
                _ring_remove(roots, m)
                continue
            loop = _loop_back_to(vertex)
            if loop:
                # A cycle the start is not on: kmod 30 walks it forever (depmod hangs).
                # Report it here instead, in the same words, and walk on.
                for c in loop:
                    in_loops.add(modules[c].modname)
                    _ring_remove(roots, c)
                text = " -> ".join([*(modules[c].modname for c in loop), modules[m].modname])
                if text not in hang_reports:
                    hang_reports.add(text)
                    messages.append(Message(Level.ERROR, f"Cycle detected: {text}\n"))
                continue
            stack.extend(_Vertex(d, vertex) for d in deps[m])
    messages.append(Message(Level.ERROR,
                            f"Found {len(in_loops)} modules in dependency cycles!\n"))
    return messages
