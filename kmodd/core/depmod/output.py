"""The files depmod writes, rendered from the dependency graph (kmod 30's `depmod_output`).

In writing order: modules.dep, .dep.bin, .alias, .alias.bin, .softdep, .symbols,
.symbols.bin, .builtin.bin, .builtin.alias.bin, .devname. With -n only the text files are
produced (kmod prints them to stdout). The two builtin indexes come from files of the kernel
build; when one is missing kmod warns and still writes an empty (0-byte) index, and so does
this. kmod 30 knows no weakdep: there is no modules.weakdep.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from errno import ENOSPC

from kmodd.core.depmod.binindex_write import IndexBuilder, IndexCharacterError
from kmodd.core.depmod.build import (
    OUTPUT_FILES,
    PATH_MAX,
    DependencyGraph,
    DepmodModule,
    DepmodOptions,
    ModuleFacts,
    OutputEvent,
    fgets_chunks,
)
from kmodd.core.depmod.config import Message
from kmodd.core.kmod.normalize import BadAlias, alias_normalize, modname_normalize
from kmodd.core.priority import Priority

HEADER_ALIAS = "# Aliases extracted from modules themselves.\n"
HEADER_SOFTDEP = "# Soft dependencies extracted from modules themselves.\n"
HEADER_SYMBOLS = "# Aliases for symbols, used by symbol_request().\n"
HEADER_DEVNAME = "# Device nodes to trigger on-demand module loading.\n"
SYMBOL_ALIAS_PREFIX = "symbol:"
DEVNAME_PREFIX = "devname:"
_MAJOR_MINOR = {
    "c": re.compile(r"char-major-\s*([+-]?\d+)-\s*([+-]?\d+)"),
    "b": re.compile(r"block-major-\s*([+-]?\d+)-\s*([+-]?\d+)"),
}


@dataclass(frozen=True, slots=True)
class BuildFile:
    """A file of the kernel build (modules.builtin, modules.builtin.modinfo): its contents,
    or the errno that opening it failed with."""

    name: str
    data: bytes | None = None
    errno: int = 0


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """One output: its contents (None: not written, kmod stopped there), and what its
    rendering logged."""

    name: str
    data: bytes | None
    events: tuple[OutputEvent, ...] = ()


#: Files that need only the modules and their facts, and files that need the dependency
#: graph; the two groups can be rendered side by side.
MODULE_FILES = ("modules.alias", "modules.alias.bin", "modules.softdep",
                "modules.builtin.bin", "modules.builtin.alias.bin", "modules.devname")
GRAPH_FILES = ("modules.dep", "modules.dep.bin", "modules.symbols", "modules.symbols.bin")
BINARY_FILES = frozenset(n for n in OUTPUT_FILES if n.endswith(".bin"))


def render_module_files(
    modules: Sequence[DepmodModule],
    facts: Sequence[ModuleFacts],
    builtin: BuildFile,
    builtin_modinfo: BuildFile,
    dirname: str,
    options: DepmodOptions,
) -> list[RenderedFile]:
    """The outputs that do not depend on the dependency graph (see MODULE_FILES)."""
    r = _Renderer(modules, facts, None, options)
    steps: dict[str, Callable[[], bytes]] = {
        "modules.alias": r.aliases,
        "modules.alias.bin": r.aliases_bin,
        "modules.softdep": r.softdeps,
        "modules.builtin.bin": lambda: r.builtin_bin(builtin, dirname),
        "modules.builtin.alias.bin": lambda: r.builtin_alias_bin(builtin_modinfo, dirname),
        "modules.devname": r.devname,
    }
    return [r.render(name, step) for name, step in steps.items()
            if not (options.to_stdout and name in BINARY_FILES)]


def render_graph_files(
    modules: Sequence[DepmodModule],
    graph: DependencyGraph,
    options: DepmodOptions,
) -> list[RenderedFile]:
    """The outputs that need the dependency graph (see GRAPH_FILES)."""
    r = _Renderer(modules, (), graph, options)
    steps: dict[str, Callable[[], bytes]] = {
        "modules.dep": r.deps,
        "modules.dep.bin": r.deps_bin,
        "modules.symbols": r.symbols,
        "modules.symbols.bin": r.symbols_bin,
    }
    return [r.render(name, step) for name, step in steps.items()
            if not (options.to_stdout and name in BINARY_FILES)]


def in_output_order(rendered: Sequence[RenderedFile]) -> list[RenderedFile]:
    """The files in kmod's writing order, up to and including the first one that failed
    fatally (kmod exits there; later files are not written)."""
    by_name = {f.name: f for f in rendered}
    out = []
    for name in OUTPUT_FILES:
        f = by_name.get(name)
        if f is None:
            continue
        out.append(f)
        if f.data is None:
            break
    return out


def render_outputs(
    modules: Sequence[DepmodModule],
    facts: Sequence[ModuleFacts],
    graph: DependencyGraph,
    builtin: BuildFile,
    builtin_modinfo: BuildFile,
    dirname: str,
    options: DepmodOptions,
) -> list[RenderedFile]:
    """Every output of depmod, in writing order (text files only with -n)."""
    return in_output_order([
        *render_graph_files(modules, graph, options),
        *render_module_files(modules, facts, builtin, builtin_modinfo, dirname, options),
    ])


class _Renderer:
    def __init__(self, modules: Sequence[DepmodModule], facts: Sequence[ModuleFacts],
                 graph: DependencyGraph | None, options: DepmodOptions) -> None:
        self.modules = modules
        self.facts = facts
        self._graph = graph
        self.options = options
        self.events: list[OutputEvent] = []
        self._lines: list[str] | None = None
        self._owned: list[tuple[int, bytes, int]] | None = None

    @property
    def graph(self) -> DependencyGraph:
        assert self._graph is not None, "this file needs the dependency graph"
        return self._graph

    def render(self, name: str, step: Callable[[], bytes]) -> RenderedFile:
        """Run one file's renderer, collecting what it logs; a character the index cannot
        hold is fatal, as in kmod (its CRIT)."""
        self.events = []
        try:
            data: bytes | None = step()
        except IndexCharacterError as exc:
            self.events.append(OutputEvent(Message(Priority.CRIT, str(exc))))
            data = None
        return RenderedFile(name, data, tuple(self.events))

    def _warn(self, text: str, level: Priority = Priority.WARNING) -> None:
        self.events.append(OutputEvent(Message(level, text)))

    def dep_lines(self) -> list[str]:
        """`path: dep dep...` for every module: the transitive dependencies, ordered by
        their topological number (closest users first, the most basic module last)."""
        if self._lines is not None:
            return self._lines
        deps, number = self.graph.deps, self.graph.dep_sort_idx
        closure: list[frozenset[int]] = [frozenset()] * len(deps)
        # Dependencies always have larger numbers than their users: fill from the end.
        for m in sorted(range(len(deps)), key=number.__getitem__, reverse=True):
            direct = deps[m]
            if not direct:
                continue
            acc = set(direct)
            for d in direct:
                acc |= closure[d]
            closure[m] = frozenset(acc)
        paths = [m.output_path for m in self.modules]
        lines = []
        for m, path in enumerate(paths):
            if closure[m]:
                ordered = sorted(closure[m], key=number.__getitem__)
                lines.append(path + ": " + " ".join([paths[d] for d in ordered]))
            else:
                lines.append(path + ":")
        self._lines = lines
        return lines

    def deps(self) -> bytes:
        return "".join(line + "\n" for line in self.dep_lines()).encode("latin-1")

    def deps_bin(self) -> bytes:
        # Module names are unique: no duplicate to report even with -w.
        index = IndexBuilder()
        index.add_many([m.modname for m in self.modules], self.dep_lines(),
                       range(len(self.modules)))
        return index.to_bytes()

    def aliases(self) -> bytes:
        out = [HEADER_ALIAS]
        for m, f in zip(self.modules, self.facts, strict=True):
            out.extend(f"alias {a} {m.modname}\n" for a in f.aliases)
        return "".join(out).encode("latin-1")

    def aliases_bin(self) -> bytes:
        index = IndexBuilder()
        keys: list[str] = []
        names: list[str] = []
        positions: list[int] = []
        warn_dups = self.options.warn_dups
        for idx, (m, f) in enumerate(zip(self.modules, self.facts, strict=True)):
            for alias in f.aliases:
                try:
                    key = alias_normalize(alias)
                except BadAlias:
                    self._warn(f"Unmatched bracket in {alias}\n")
                    continue
                if warn_dups:  # one at a time, so that the warnings keep kmod's order
                    if index.add(key, m.modname, idx):
                        self._warn(f"duplicate module alias:\n{key} {m.modname}\n")
                    continue
                keys.append(key)
                names.append(m.modname)
                positions.append(idx)
        index.add_many(keys, names, positions)
        return index.to_bytes()

    def softdeps(self) -> bytes:
        out = [HEADER_SOFTDEP]
        for m, f in zip(self.modules, self.facts, strict=True):
            out.extend(f"softdep {m.modname} {s}\n" for s in f.softdeps)
        return "".join(out).encode("latin-1")

    def _owned_symbols(self) -> list[tuple[int, bytes, int]]:
        # kmod's symbol hash iterates bucket by bucket, keys sorted within a bucket.
        if self._owned is None:
            self._owned = sorted(self.graph.symbols)
        return self._owned

    def symbols(self) -> bytes:
        out = [HEADER_SYMBOLS.encode("latin-1")]
        names = [m.modname.encode("latin-1") for m in self.modules]
        out.extend(b"alias symbol:" + name + b" " + names[owner] + b"\n"
                   for _, name, owner in self._owned_symbols())
        return b"".join(out)

    def symbols_bin(self) -> bytes:
        # Symbol names are unique: no duplicate to report even with -w.
        owned = self._owned_symbols()
        index = IndexBuilder()
        index.add_many([SYMBOL_ALIAS_PREFIX + raw.decode("latin-1") for _, raw, _ in owned],
                       [self.modules[owner].modname for _, _, owner in owned],
                       [owner for _, _, owner in owned])
        return index.to_bytes()

    def builtin_bin(self, source: BuildFile, dirname: str) -> bytes:
        if source.data is None:
            self._warn(f"could not open {source.name} at {dirname}: "
                       f"{os.strerror(source.errno)}\n")
            return b""
        index = IndexBuilder()
        modname: str | None = None
        for chunk in fgets_chunks(source.data):
            nul = chunk.find(b"\0")
            line = (chunk if nul < 0 else chunk[:nul]).decode("latin-1")
            if not (line[:1].isascii() and line[:1].isalpha()):
                self._warn(f"Invalid modules.builtin line: {line}\n", Priority.ERR)
                continue
            base = line[line.rfind("/") + 1 :]
            if base:  # kmod keeps the previous name for an empty base name
                modname = modname_normalize(base)
            if modname is not None:
                index.add(modname, "", 0)
        return index.to_bytes()

    def builtin_alias_bin(self, source: BuildFile, dirname: str) -> bytes:
        if source.data is None:
            self._warn(f"could not open {source.name} at {dirname}: "
                       f"{os.strerror(source.errno)}\n")
            return b""
        index = IndexBuilder()
        stream = _Stream(source.data, self)
        # Records are `modname.key=value\0`; kmod reads them with its flush_stream helpers,
        # whose quirks (a record without "=" swallows the next one) are kept.
        while not stream.eof:
            modname = stream.read_to(ord("."))
            if not modname:
                continue
            key = stream.read_to(ord("="))
            if key != "alias":
                stream.skip_to(0)
                continue
            value = stream.read_to(0)
            if not value:
                continue
            try:
                alias = alias_normalize(value)
            except BadAlias:
                self._warn(f"Unmatched bracket in {value}\n")
                continue
            index.add(alias, modname, 0)
        return index.to_bytes()

    def devname(self) -> bytes:
        out: list[str] = []
        for m, f in zip(self.modules, self.facts, strict=True):
            devname: str | None = None
            kind = ""
            major = minor = 0
            for alias in f.aliases:
                if alias.startswith(DEVNAME_PREFIX):
                    devname = alias[len(DEVNAME_PREFIX) :]
                else:
                    for letter, pattern in _MAJOR_MINOR.items():
                        match = pattern.match(alias)
                        if match:
                            kind = letter
                            major = int(match[1]) & 0xFFFFFFFF
                            minor = int(match[2]) & 0xFFFFFFFF
                            break
                if kind and devname is not None:
                    break
            if devname is None:
                continue
            if not kind:
                self._warn(f"Module '{m.modname}' has devname ({devname}) but lacks major "
                           f"and minor information. Ignoring.\n", Priority.ERR)
                continue
            if not out:
                out.append(HEADER_DEVNAME)
            out.append(f"{m.modname} {devname} {kind}{major}:{minor}\n")
        return "".join(out).encode("latin-1")


class _Stream:
    """kmod's `flush_stream_to`/`flush_stream` over a byte string."""

    def __init__(self, data: bytes, renderer: _Renderer) -> None:
        self.data = data
        self.pos = 0
        self.eof = False
        self.renderer = renderer

    def _stop(self, endchar: int) -> int:
        ends = [e for e in (self.data.find(bytes((endchar,)), self.pos),
                            self.data.find(b"\0", self.pos)) if e >= 0]
        return min(ends) if ends else len(self.data)

    def read_to(self, endchar: int) -> str:
        """Characters up to `endchar` (consumed); "" when a NUL or the end came first."""
        data, start = self.data, self.pos
        stop = self._stop(endchar)
        if stop - start > PATH_MAX:  # the buffer fills: kmod warns, keeps PATH_MAX - 1
            text = data[start : start + PATH_MAX].decode("latin-1")
            self.renderer._warn(f"Could not flush stream: {ENOSPC}. Partial content: {text}\n")
            self.pos = start + PATH_MAX + 1
            return ""
        if stop >= len(data):
            self.pos = len(data)
            self.eof = True
            return ""
        self.pos = stop + 1
        if data[stop] != endchar:
            return ""
        return data[start:stop].decode("latin-1")

    def skip_to(self, endchar: int) -> None:
        stop = self._stop(endchar)
        if stop >= len(self.data):
            self.pos = len(self.data)
            self.eof = True
        else:
            self.pos = stop + 1
