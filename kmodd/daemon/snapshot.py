"""The daemon's view of one module directory and its configuration: an immutable `Snapshot`.

A snapshot holds the module index, the modprobe.d configuration (with the kernel command
line's part of it) with its patterns compiled once, in the build thread (`resolve.compiled`
finds them again by the configuration's identity), and the index answers
already given, remembered (`MemoIndexes`: many devices share a modalias). Every event gets a
fresh `Resolver` over the current snapshot, which costs a few object creations.

`Snapshots` keeps the current one and replaces it. A new snapshot is built in a thread, off
the event loop, and swapped in by one reference assignment; events already being resolved
keep the one they started with. If the build fails (an index that cannot be read or is
damaged), the current snapshot stays and the failure says why, naming the file and offset.

Start-up takes two steps so that the daemon is ready quickly: first a snapshot over the
index files as they are (`RawIndexes`, which libkmod would use too; coldplug runs on it),
then, once the boot's burst of uevents is over, the fully decoded `ModuleIndex`, built in
a thread and swapped in under the same generation (`service.Daemon._coldplug`). With
`index_in_memory = no` the daemon stays on the raw files (about 11 MB less for a
distribution kernel, each new modalias looked up on the trie).

Structure: every index's whole trie is walked with every bound checked (`BinIndex.check`)
before a snapshot that uses it is complete, so that no lookup meets damage later. The walk
costs about 20 ms per megabyte; start-up checks, before READY, only the index it cannot do
without and the small builtin ones (STARTUP_CHECKED, a few milliseconds), and the big
modules.alias.bin and modules.symbols.bin in the step after the burst (`Snapshots.decode`
checks them in mapped mode too); a lookup on them before that which meets damage fails
for its device alone. A reload checks every file before it swaps, so a damaged index never
replaces a good one. The files are read, not mapped: a file truncated in place under a
mapping would kill the daemon with SIGBUS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from kmodd.core.autoload.decide import kernel_module_blacklist
from kmodd.core.kmod.binindex import IndexFileError
from kmodd.core.kmod.config import Config
from kmodd.core.kmod.index import DECODED_ROLES, INDEX_FILES, Indexes, RawIndexes, open_indexes
from kmodd.core.kmod.libkmodlog import LibkmodEvent
from kmodd.core.kmod.resolve import CompiledConfig, Resolver, SystemView, compiled
from kmodd.daemon.workers import BUILD_DEADLINE, SYSTEM_WORKERS, PoolClosed, PoolTimeout, WorkerPool
from kmodd.system.moddb import (
    decode_indexes,
    index_sources,
    load_config,
    open_error,
    read_cmdline,
    read_index_files,
)
from kmodd.system.root import Root
from kmodd.system.sysview import FileView

#: Index answers remembered per snapshot; when full, the memo starts over.
LOOKUP_MEMO_MAX = 65536
_V = TypeVar("_V")
#: The one index a snapshot cannot do without.
REQUIRED_INDEX = INDEX_FILES["dep"]
#: Indexes whose structure start-up walks before READY (see the module docstring): the
#: required one (5 ms for a distribution kernel) and the two small builtin ones.
STARTUP_CHECKED = ("dep", "builtin", "builtin_alias")


def _drop_log(event: LibkmodEvent) -> None:
    """The daemon does not print libkmod's per-lookup messages."""


class MemoIndexes:
    """An `Indexes` that remembers every answer of the index under it (bounded).

    One memo per kind of question, so a hit is one dict probe.
    """

    def __init__(self, inner: Indexes) -> None:
        self.inner = inner
        self.moddir = inner.moddir
        self._deps: dict[str, str | None] = {}
        self._names: dict[tuple[str, str], tuple[str, ...] | None] = {}
        self._builtin: dict[str, bool | None] = {}

    def dep_line(self, name: str) -> str | None:
        return _remembered(self._deps, name, self.inner.dep_line)

    def _listed(self, role: str, key: str) -> list[str] | None:
        memo = self._names
        try:
            found = memo[role, key]
        except KeyError:
            if role == "alias":
                answer = self.inner.aliases(key)
            elif role == "symbols":
                answer = self.inner.symbols(key)
            else:
                answer = self.inner.builtin_aliases(key)
            found = tuple(answer) if answer is not None else None
            if len(memo) >= LOOKUP_MEMO_MAX:
                memo.clear()
            memo[role, key] = found
        return list(found) if found is not None else None

    def aliases(self, key: str) -> list[str] | None:
        return self._listed("alias", key)

    def symbols(self, key: str) -> list[str] | None:
        return self._listed("symbols", key)

    def builtin_aliases(self, key: str) -> list[str] | None:
        return self._listed("builtin_alias", key)

    def builtin(self, name: str) -> bool | None:
        return _remembered(self._builtin, name, self.inner.builtin)

    def dump(self, role: str) -> list[tuple[str, str]]:
        return self.inner.dump(role)

    @property
    def remembered(self) -> int:
        return len(self._deps) + len(self._names) + len(self._builtin)


def _remembered(memo: dict[str, _V], name: str, ask: Callable[[str], _V]) -> _V:
    """`ask(name)`, answered from `memo` when it was asked before (the memo is emptied
    once it holds LOOKUP_MEMO_MAX answers)."""
    try:
        return memo[name]
    except KeyError:
        pass
    if len(memo) >= LOOKUP_MEMO_MAX:
        memo.clear()
    answer = memo[name] = ask(name)
    return answer


class RememberedFiles:
    """A `SystemView` that remembers its stat() answers for the life of one snapshot.

    libkmod stats every dependency path it reads from modules.dep when it creates a module
    object; udev's long-lived context creates each object once. Remembering the answers
    per snapshot does the same for a daemon that makes a fresh resolver per event (a new
    index, after depmod, comes with a new snapshot and a fresh memo).
    """

    def __init__(self, inner: SystemView) -> None:
        self._inner = inner
        self._memo: dict[str, int] = {}

    def stat_errno(self, path: str) -> int:
        try:
            return self._memo[path]
        except KeyError:
            pass
        if len(self._memo) >= LOOKUP_MEMO_MAX:
            self._memo.clear()
        err = self._memo[path] = self._inner.stat_errno(path)
        return err

    def cwd(self) -> str:
        return self._inner.cwd()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One generation of the module index and configuration."""

    generation: int
    moddir: str  # as the index names it (/lib/modules/<release>)
    real_moddir: str  # where it is read (under the daemon's root)
    indexes: MemoIndexes = field(repr=False)
    config: Config = field(repr=False)
    compiled: CompiledConfig = field(repr=False)
    files: RememberedFiles = field(repr=False)
    decoded: bool
    checked: bool = True  # every index's structure walked (else only STARTUP_CHECKED)
    kernel_blacklist: frozenset[str] = frozenset()
    modules: int = 0  # modules in modules.dep (known once decoded)
    build_seconds: float = 0.0
    problems: tuple[str, ...] = ()  # configuration lines that were ignored

    def resolver(self) -> Resolver:
        """A fresh libkmod-like context for one event or request."""
        # Resolver finds `compiled` again by the config's identity (resolve.compiled).
        return Resolver(self.indexes, self.config, self.files, log=_drop_log)

    @property
    def empty(self) -> bool:
        """True for the stand-in used when no index could be read at start-up."""
        return self.generation == 0


@dataclass(frozen=True, slots=True)
class SnapshotFailure:
    """Why a snapshot could not be built (file and offset where known)."""

    reason: str


def build_snapshot(root: Root, moddir: str, real_moddir: str, generation: int, *,
                   decode: bool = True, check_all: bool = True) -> Snapshot | SnapshotFailure:
    """Read the module directory and the configuration into a Snapshot (blocking).

    Every index is checked whole (`check_all`), or only those of STARTUP_CHECKED; any
    damage is a SnapshotFailure naming the file, the offset and what is wrong.
    """
    started = time.monotonic()
    dep_path = f"{real_moddir}/{REQUIRED_INDEX}"
    error = open_error(dep_path)
    if error is not None:
        return SnapshotFailure(f"{moddir}/{REQUIRED_INDEX}: {error}")
    bins, problems = open_indexes(moddir, read_index_files(real_moddir, copy=True),
                                  sources=index_sources(real_moddir))
    if problems:
        return SnapshotFailure(str(problems[0]))
    if "dep" not in bins:  # replaced by something else since open_error looked
        return SnapshotFailure(f"{moddir}/{REQUIRED_INDEX}: cannot be read")
    indexes: Indexes
    # An index the decode reads whole is checked by the decode itself.
    walked = [role for role in bins if (check_all or role in STARTUP_CHECKED)
              and not (decode and role in DECODED_ROLES)]
    try:
        counts = {role: bins[role].check() for role in walked}
        indexes = (decode_indexes(moddir, bins) if decode
                   else RawIndexes(moddir, bins, keep_subtrees=True))
    except IndexFileError as e:
        return SnapshotFailure(str(e))
    modules = counts["dep"]
    config = load_config(root, moddir, real_moddir=real_moddir)
    cmdline = read_cmdline(root) or b""
    return Snapshot(
        generation=generation,
        moddir=moddir,
        real_moddir=real_moddir,
        indexes=MemoIndexes(indexes),
        config=config,
        compiled=compiled(config),  # compiled here, in the build thread, not per event
        files=RememberedFiles(FileView(root)),
        decoded=decode,
        checked=check_all,
        kernel_blacklist=kernel_module_blacklist(cmdline.decode("latin-1")),
        modules=modules,
        build_seconds=time.monotonic() - started,
        problems=tuple(d.message for d in config.diagnostics),
    )


def empty_snapshot(root: Root, moddir: str, real_moddir: str) -> Snapshot:
    """Generation 0: no index at all (every lookup finds nothing) until a reload works."""
    config = Config()
    return Snapshot(0, moddir, real_moddir, MemoIndexes(RawIndexes(moddir, {})), config,
                    compiled(config), RememberedFiles(FileView(root)), decoded=True)


class Snapshots:
    """The current snapshot, and its replacement: one build at a time, swapped atomically."""

    def __init__(self, root: Root, moddir: str, real_moddir: str, *,
                 in_memory: bool = True, pool: WorkerPool | None = None) -> None:
        """`in_memory`: decode the index (the `index_in_memory` setting); without it every
        snapshot answers from the mapped files, its memo remembering what was asked.
        `pool`: the threads that build snapshots (the daemon's own work, never a client's)."""
        self.pool = pool if pool is not None else WorkerPool("kmodd-index", SYSTEM_WORKERS)
        self.root = root
        self.moddir = moddir
        self.real_moddir = real_moddir
        self.in_memory = in_memory
        self.current = empty_snapshot(root, moddir, real_moddir)
        self.last_failure: SnapshotFailure | None = None
        self._next_generation = 1
        self._lock = asyncio.Lock()

    async def _build(self, generation: int, decode: bool,
                     check_all: bool) -> Snapshot | SnapshotFailure:
        try:
            return await self.pool.run(
                lambda: build_snapshot(self.root, self.moddir, self.real_moddir, generation,
                                       decode=decode, check_all=check_all),
                BUILD_DEADLINE)
        except PoolTimeout:
            return SnapshotFailure(f"reading {self.moddir} and the configuration took more "
                                   f"than {BUILD_DEADLINE:g} s; gave up")
        except PoolClosed:
            return SnapshotFailure("kmodd is stopping")

    async def _replace(self, decode: bool, new_generation: bool,
                       check_all: bool = True) -> Snapshot | SnapshotFailure:
        async with self._lock:
            current = self.current
            if not new_generation and current.checked and (current.decoded or not decode):
                return current  # a reload did it meanwhile (or there is nothing)
            generation = self._next_generation if new_generation else current.generation
            result = await self._build(generation, decode, check_all)
            if isinstance(result, SnapshotFailure):
                self.last_failure = result
                return result
            if new_generation:
                self._next_generation += 1
            self.last_failure = None
            self.current = result  # the swap: one reference
            return result

    async def load_fast(self) -> Snapshot | SnapshotFailure:
        """Start-up: the index as read (STARTUP_CHECKED walked, nothing decoded)."""
        return await self._replace(decode=False, new_generation=True, check_all=False)

    async def decode(self) -> Snapshot | SnapshotFailure:
        """Replace a start-up snapshot by its decoded form (same generation), every index
        checked; left mapped (not `in_memory`), only the check is made."""
        return await self._replace(decode=self.in_memory, new_generation=False)

    async def reload(self) -> Snapshot | SnapshotFailure:
        """A new generation, every index checked (and decoded, when in memory) before it
        replaces the current one."""
        return await self._replace(decode=self.in_memory, new_generation=True)
