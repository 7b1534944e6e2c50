"""The module database of one kernel version: the five `.bin` indexes libkmod reads.

Two readers answer the same questions with the same answers:

* `RawIndexes` reads each `.bin` on demand, the way libkmod walks an mmap: nothing is
  decoded up front, which is what a one-shot `modprobe` wants. For a caller that looks up
  many keys (the daemon before its decode) the alias indexes keep every wildcard subtree
  they meet decoded (`MappedAliasIndex`).
* `ModuleIndex` is the immutable snapshot the daemon keeps: every index decoded once into
  dicts and an `AliasIndex`, so that a lookup costs microseconds.

An index that is missing answers None ("no such index", libkmod's -ENOSYS), and the lookup
chain moves on, as libkmod's does.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import NamedTuple, Protocol

from kmodd.core.kmod.aliasindex import AliasIndex, MappedAliasIndex
from kmodd.core.kmod.binindex import BinIndex, IndexFileError

#: The index files libkmod loads, by role, in the order kmod_load_resources maps them.
INDEX_FILES = {
    "dep": "modules.dep.bin",
    "alias": "modules.alias.bin",
    "symbols": "modules.symbols.bin",
    "builtin_alias": "modules.builtin.alias.bin",
    "builtin": "modules.builtin.bin",
}


#: The file depmod builds an index from, for the indexes it writes empty (zero bytes) when
#: that file is missing (a kernel without modules.builtin.modinfo, before 5.2): an empty
#: index is then no index; with its source present, an empty index is a damaged one.
INDEX_SOURCES = {
    "builtin": "modules.builtin",
    "builtin_alias": "modules.builtin.modinfo",
}


#: The indexes `ModuleIndex` decodes whole (the decode reads, and so checks, every node);
#: the others it searches in place.
DECODED_ROLES = frozenset({"builtin", "alias", "builtin_alias"})


class Indexes(Protocol):
    """What the resolver asks of a module database."""

    moddir: str

    def dep_line(self, name: str) -> str | None:
        """The `modules.dep` line of a module (`path: deps...`), None if absent."""
        ...

    def aliases(self, key: str) -> list[str] | None:
        """Modules of `modules.alias.bin` whose pattern matches; None if no index."""
        ...

    def symbols(self, key: str) -> list[str] | None:
        """Modules of `modules.symbols.bin` matching `symbol:...`; None if no index."""
        ...

    def builtin(self, name: str) -> bool | None:
        """Whether `modules.builtin.bin` has the name; None if no index."""
        ...

    def builtin_aliases(self, key: str) -> list[str] | None:
        """Modules of `modules.builtin.alias.bin` matching; None if no index."""
        ...

    def dump(self, role: str) -> list[tuple[str, str]]:
        """Every (key, value) of an index in trie order (for `modprobe -c`)."""
        ...


class IndexProblem(NamedTuple):
    """An index file that exists but cannot be used, and why."""

    role: str
    path: str
    offset: int
    reason: str
    kind: str  # "short", "magic", "version" or "structure" (see IndexFileError)
    found: int = 0

    def __str__(self) -> str:
        return f"{self.path}: offset {self.offset:#x}: {self.reason}"


def open_indexes(
    moddir: str, files: Mapping[str, bytes | None], *, sources: Container[str] | None = None,
) -> tuple[dict[str, BinIndex], list[IndexProblem]]:
    """Parse the headers of the index files present (`files` maps file name to bytes).

    `sources`: the names of the module directory's files that exist, to tell an empty
    builtin index depmod wrote for a missing source from a damaged one (INDEX_SOURCES);
    without it an empty modules.builtin.alias.bin is skipped, as kmod skips it. Only the
    headers are read here (`BinIndex.check` walks the rest).
    """
    out: dict[str, BinIndex] = {}
    problems: list[IndexProblem] = []
    for role, fname in INDEX_FILES.items():
        data = files.get(fname)
        if data is None:
            continue
        path = f"{moddir}/{fname}"
        if len(data) == 0 and role in INDEX_SOURCES:
            source = INDEX_SOURCES[role]
            if sources is None:
                if role == "builtin_alias":
                    continue  # kmod skips an empty modules.builtin.alias.bin
            elif source not in sources:
                continue  # what depmod writes when the source is missing: no index
            else:
                problems.append(IndexProblem(
                    role, path, 0, f"the file is empty, but {source} is present (depmod "
                    "writes an index from it): a damaged or unfinished write", "short"))
                continue
        try:
            out[role] = BinIndex(data, path)
        except IndexFileError as e:
            problems.append(IndexProblem(role, e.path, e.offset, e.reason, e.kind, e.found))
    return out, problems


class RawIndexes:
    """Lookups straight on the `.bin` bytes, nothing decoded ahead of time (with
    `keep_subtrees`, the alias indexes keep what their lookups decoded)."""

    def __init__(self, moddir: str, bins: Mapping[str, BinIndex], *,
                 keep_subtrees: bool = False) -> None:
        self.moddir = moddir
        self._bins = dict(bins)
        self._wild_ix: dict[str, BinIndex | MappedAliasIndex] = dict(bins)
        if keep_subtrees:
            for role in ("alias", "builtin_alias"):
                ix = bins.get(role)
                if ix is not None:
                    self._wild_ix[role] = MappedAliasIndex(ix)

    def dep_line(self, name: str) -> str | None:
        ix = self._bins.get("dep")
        return ix.search(name) if ix is not None else None

    def _wild(self, role: str, key: str) -> list[str] | None:
        ix = self._wild_ix.get(role)
        if ix is None:
            return None
        return [v for _, v in ix.search_wild(key)]

    def aliases(self, key: str) -> list[str] | None:
        return self._wild("alias", key)

    def symbols(self, key: str) -> list[str] | None:
        return self._wild("symbols", key)

    def builtin_aliases(self, key: str) -> list[str] | None:
        return self._wild("builtin_alias", key)

    def builtin(self, name: str) -> bool | None:
        ix = self._bins.get("builtin")
        if ix is None:
            return None
        return ix.search(name) is not None

    def dump(self, role: str) -> list[tuple[str, str]]:
        ix = self._bins.get(role)
        return list(ix.dump()) if ix is not None else []


class ModuleIndex:
    """The decoded snapshot: immutable once built, cheap to replace."""

    def __init__(self, moddir: str, bins: Mapping[str, BinIndex]) -> None:
        self.moddir = moddir
        self._bins = dict(bins)
        # modules.dep.bin is searched in place (one lookup walks a handful of nodes), as
        # libkmod does; decoding its 4000 lines would cost more than every lookup of a boot.
        self._dep = bins.get("dep")
        builtin = bins.get("builtin")
        self._builtin: frozenset[str] | None = (
            frozenset(k for k, _p, _v in builtin.iter_items()) if builtin is not None else None
        )
        self._alias = _alias_index(bins.get("alias"))
        self._builtin_alias = _alias_index(bins.get("builtin_alias"))

    def dep_line(self, name: str) -> str | None:
        return self._dep.search(name) if self._dep is not None else None

    def aliases(self, key: str) -> list[str] | None:
        if self._alias is None:
            return None
        return self._alias.values(key)

    def symbols(self, key: str) -> list[str] | None:
        # Only `symbol:` lookups (request_module from the kernel) read this index: it is
        # walked on demand, as libkmod walks its mmap, rather than decoded for every snapshot.
        ix = self._bins.get("symbols")
        if ix is None:
            return None
        return [v for _, v in ix.search_wild(key)]

    def builtin_aliases(self, key: str) -> list[str] | None:
        if self._builtin_alias is None:
            return None
        return self._builtin_alias.values(key)

    def builtin(self, name: str) -> bool | None:
        return name in self._builtin if self._builtin is not None else None

    def dump(self, role: str) -> list[tuple[str, str]]:
        ix = self._bins.get(role)
        return list(ix.dump()) if ix is not None else []

    def module_count(self) -> int:
        """How many modules modules.dep lists (walks the whole index: not for hot paths;
        raises IndexFileError on a damaged one)."""
        return self._dep.check() if self._dep is not None else 0


def _alias_index(ix: BinIndex | None) -> AliasIndex | None:
    return AliasIndex(ix.iter_items(), ix) if ix is not None else None
