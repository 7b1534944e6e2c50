"""Property tests over every file of a module directory kmodd reads: damaged anywhere, it
is read or refused with the documented error naming the file, never anything else.

The files: the five `.bin` indexes and modules.softdep (the daemon's snapshot and the
front ends' lookups), modules.order, modules.builtin and modules.builtin.modinfo (what
depmod builds the indexes from) and modules.dep (what depmod rewrites). A small real tree
(the daemon tests' fixture modules, indexed by depmod) is damaged one file at a time by
truncation at any offset and by random byte flips.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodd.cli.depmod import run as depmod_run
from kmodd.core.kmod.binindex import IndexFileError
from kmodd.core.kmod.index import INDEX_FILES
from kmodd.daemon.snapshot import Snapshot, SnapshotFailure, build_snapshot
from kmodd.system.moddb import raw_indexes
from kmodd.system.root import Root
from tests.daemon.daemon_tree import KVER, MACHINE_MODULES, RunningDaemon, kmodctl, write_tree
from tests.fakes import FakeUeventSource

MODDIR = f"/lib/modules/{KVER}"
BIN_FILES = tuple(INDEX_FILES.values())
#: Read by the snapshot build (the indexes, and modules.softdep through modprobe.d).
SNAPSHOT_FILES = (*BIN_FILES, "modules.softdep")
#: Read by depmod to build the indexes (and modules.dep, which it replaces).
DEPMOD_FILES = ("modules.order", "modules.builtin", "modules.builtin.modinfo", "modules.dep")
#: Every kind of lookup the indexes answer, with keys that reach every fixture index.
LOOKUPS = (("dep_line", "kmodd_serial"), ("dep_line", "kmodd_virtio_net"),
           ("aliases", "platform:serial8250"),
           ("aliases", "pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00"),
           ("symbols", "symbol:kmodd_core_register"), ("builtin", "kmodd_rtc"),
           ("builtin_aliases", "platform:rtc_cmos"))
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Root:
    base = tmp_path_factory.mktemp("index") / "root"
    root = write_tree(base, MACHINE_MODULES)
    softdep = base / MODDIR.lstrip("/") / "modules.softdep"
    softdep.write_text("softdep kmodd_serial pre: kmodd_core post: kmodd_pcspkr\n")
    return root


class Damaged:
    """One file of the tree replaced for one example, put back afterwards."""

    def __init__(self, root: Root, name: str) -> None:
        self.path = Path(root.path(f"{MODDIR}/{name}"))
        self.shown = f"{MODDIR}/{name}"
        self.good = self.path.read_bytes()

    def write(self, data: bytes) -> None:
        self.path.write_bytes(data)

    def restore(self) -> None:
        self.path.write_bytes(self.good)


@pytest.fixture
def damaged(tree: Root) -> Iterator[dict[str, Damaged]]:
    files = {name: Damaged(tree, name) for name in (*SNAPSHOT_FILES, *DEPMOD_FILES)}
    yield files
    for f in files.values():
        f.restore()


def truncated(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def flipped(data: bytes, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data)
    for where, mask in flips:
        if out:
            out[min(int(where * len(out)), len(out) - 1)] ^= mask
    return bytes(out)


damage: st.SearchStrategy[tuple[str, float, list[tuple[float, int]]]] = st.one_of(
    st.floats(0.0, 0.999).map(lambda f: ("truncate", f, [])),
    st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)), min_size=1, max_size=4)
    .map(lambda flips: ("flip", 0.0, flips)),
)


def apply(d: Damaged, how: tuple[str, float, list[tuple[float, int]]]) -> None:
    kind, fraction, flips = how
    d.write(truncated(d.good, fraction) if kind == "truncate" else flipped(d.good, flips))


def ask_every_lookup(indexes: object, shown: str) -> None:
    """Every lookup answers, or raises IndexFileError naming the damaged file."""
    for method, key in LOOKUPS:
        try:
            getattr(indexes, method)(key)
        except IndexFileError as e:
            assert str(e).startswith(f"{shown}: offset 0x"), str(e)


@FAST
@given(name=st.sampled_from(SNAPSHOT_FILES), how=damage, decode=st.booleans())
def test_a_damaged_file_gives_a_snapshot_or_a_failure_naming_it(
        tree: Root, damaged: dict[str, Damaged], name: str,
        how: tuple[str, float, list[tuple[float, int]]], decode: bool) -> None:
    d = damaged[name]
    apply(d, how)
    try:
        result = build_snapshot(tree, MODDIR, tree.path(MODDIR), 1, decode=decode)
    finally:
        d.restore()
    if isinstance(result, SnapshotFailure):
        assert result.reason.startswith(f"{d.shown}: "), result.reason
        return
    assert isinstance(result, Snapshot)
    # A snapshot whose every index was checked never meets damage in a lookup.
    for method, key in LOOKUPS:
        getattr(result.indexes, method)(key)


@FAST
@given(name=st.sampled_from(BIN_FILES), how=damage)
def test_the_start_up_snapshot_and_the_front_ends_lookups_only_raise_index_file_error(
        tree: Root, damaged: dict[str, Damaged], name: str,
        how: tuple[str, float, list[tuple[float, int]]]) -> None:
    d = damaged[name]
    apply(d, how)
    try:
        fast = build_snapshot(tree, MODDIR, tree.path(MODDIR), 1, decode=False,
                              check_all=False)
        if isinstance(fast, Snapshot):
            ask_every_lookup(fast.indexes, d.shown)
        else:
            assert fast.reason.startswith(f"{d.shown}: "), fast.reason
        indexes, _problems = raw_indexes(MODDIR, tree.path(MODDIR))
        ask_every_lookup(indexes, d.shown)
        for role in INDEX_FILES:
            try:
                indexes.dump(role)
            except IndexFileError as e:
                assert str(e).startswith(f"{d.shown}: offset 0x"), str(e)
    finally:
        d.restore()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(DEPMOD_FILES), how=damage)
def test_depmod_reads_any_damaged_source_file_without_a_traceback(
        tree: Root, damaged: dict[str, Damaged], name: str,
        how: tuple[str, float, list[tuple[float, int]]]) -> None:
    d = damaged[name]
    apply(d, how)
    out, err = io.BytesIO(), io.BytesIO()
    try:
        code = depmod_run(["depmod", "-n", "-b", tree.prefix, KVER], root=Root(),
                          stdout=out, stderr=err, environ={})
    finally:
        d.restore()
    assert code in (0, 1)
    assert b"Traceback" not in err.getvalue()


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(BIN_FILES), how=damage)
def test_the_daemon_reloading_onto_a_damaged_file_keeps_running_and_answers_status(
        tree: Root, damaged: dict[str, Damaged], name: str,
        how: tuple[str, float, list[tuple[float, int]]]) -> None:
    d = damaged[name]

    async def scenario() -> None:
        running = RunningDaemon(tree, source=FakeUeventSource())
        async with running as daemon:
            apply(d, how)
            await daemon.reload("a test")
            code, out, _ = await asyncio.to_thread(kmodctl, running.socket_path, "status")
            assert code == 0
            assert "   State: running\n" in out
            assert daemon.snapshots.current.generation >= 1

    try:
        asyncio.run(scenario())
    finally:
        d.restore()
