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

Neighbours: depmod_config (depmod.d, which copy of a module wins), depmod_hash (kmod's
hash), depmod_cycles (the numbering and the cycle report), depmod_output (the files).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat

from kmodd.core.depmod.config import Message
from kmodd.core.depmod.cycles import report_cycles, topological_sort
from kmodd.core.depmod.hash import kmod_hashes
from kmodd.core.kmod.normalize import modname_normalize
from kmodd.core.modfile import compression
from kmodd.core.modfile.elf import ElfError, parse_module
from kmodd.core.priority import Priority

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

#: What strtoull(s, &end, 16) consumes entirely.
_STRTOULL_HEX = re.compile(r"[ \t\n\v\f\r]*(?P<sign>[+-]?)(?:0[xX])?(?P<digits>[0-9a-fA-F]+)")


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
                 open_errno: int = 0,
                 zstd: compression.ZstdDecoder | None = None) -> ModuleFacts:
    """Read a module file's contents the way depmod's `depmod_load_modules` does.

    A file libkmod cannot open or decode gives one "failed to load symbols" error with the
    errno libkmod returns (libkmod's own decompression messages never show: kmod 30 logs
    them through a context it has not attached yet). `raw` is None when the file could
    not be read at all (`open_errno` says why); `zstd` decodes zstd files.
    """
    messages: list[Message] = []
    image: compression.Buffer | None = None
    err = open_errno
    if raw is not None:
        try:
            image = compression.decompress(raw, zstd)
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
                Priority.ERR, f"failed to load symbols from {path}: {os.strerror(err)}\n"))
        return ModuleFacts(messages=tuple(messages))
    try:
        exports = elf.export_pairs()
    except ElfError as exc:
        if exc.errno != errno.ENOENT:
            messages.append(Message(
                Priority.ERR, f"failed to load symbols from {path}: {os.strerror(exc.errno)}\n"))
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
    names: tuple[str, ...] = ()
    crcs: tuple[int, ...] = ()
    if exports:
        names, crcs = (tuple(column) for column in zip(*exports, strict=True))
        prefix = options.sym_prefix
        if prefix:
            names = tuple(n[1:] if n[:1] == prefix else n for n in names)
    needs_tuple = tuple(needs)
    return ModuleFacts(
        aliases=aliases, softdeps=softdeps, exports=names, export_crcs=crcs, needs=needs_tuple,
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
                Priority.ERR, f"{dirname}/modules.order:{lineno} corrupted line misses '\\n'\n"))
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
            messages.append(Message(Priority.ERR, f"{path}:{lineno} Invalid symbol version "
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
            messages.append(Message(Priority.ERR, f"{path}:{lineno}: invalid line: {line}\n"))
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
    dep_sort_idx, leftover = topological_sort(deps, users)
    if leftover is not None:
        events.extend(OutputEvent(m) for m in report_cycles(modules, deps, leftover))
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
                    Priority.WARNING, f"{modules[idx].path} needs unknown symbol {name}\n")))
            continue
        if options.check_symvers and options.print_unknown and not weak and f.need_crcs \
                and sym.crc != f.need_crcs[k]:
            events.append(OutputEvent(Message(
                Priority.WARNING,
                f"{modules[idx].path} disagrees about version of symbol {name}\n")))
        owner = sym.owner
        if owner < 0 or owner in mine:
            continue
        mine.append(owner)
        users[owner] += 1
        if options.verbose:
            events.append(OutputEvent(
                show=f'{modules[idx].path} needs "{look}": {modules[owner].path}\n'))
