"""The record file on disk (`system.loadrecords`): started fresh by each instance, read by the
next, kept small, and given up (not the daemon) when /run is full."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmodd.core.autoload.loadrecords import Instance, Loaded, parse
from kmodd.system import loadrecords
from kmodd.system.loadrecords import open_records

BOOT = "5d1e4c1a-1111-4222-8333-444455556666"


def kinds(path: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    records, problems = parse(path.read_bytes(), str(path))
    assert problems == []
    return [(r.kind.value, r.pid, r.fields) for r in records]


def test_a_first_instance_starts_an_empty_record_readable_only_by_root(tmp_path: Path) -> None:
    path = tmp_path / "run/kmodd/loads"
    opened = open_records(str(path), BOOT, frozenset(), pid=100)
    assert (opened.history.instances, opened.history.problems) == ((), ())
    opened.records.inserting("ahci", "/devices/a")
    opened.records.inserted("ahci", 0)
    opened.records.stopped()
    opened.records.close()
    assert [(k, p, f[:1]) for k, p, f in kinds(path)] == [
        ("start", 100, (BOOT,)), ("insert", 100, ("ahci",)), ("done", 100, ("ahci",)),
        ("stop", 100, ())]
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_next_instance_reads_the_previous_one_and_carries_what_is_still_live(
        tmp_path: Path) -> None:
    path = str(tmp_path / "loads")
    first = open_records(path, BOOT, frozenset(), pid=100)
    for name in ("ahci", "e1000"):
        first.records.inserting(name, f"/devices/{name}")
        first.records.inserted(name, 0)
    first.records.inserting("sd_mod", "/devices/disk")  # killed here
    second = open_records(path, BOOT, frozenset({"ahci", "sd_mod"}), pid=200)
    assert second.history.previous == Instance(100, float(f"{first.records.started:.6f}"), False)
    assert dict(second.history.loaded) == {
        "ahci": Loaded("ahci", 100, ("/devices/ahci",), True),
        "e1000": Loaded("e1000", 100, ("/devices/e1000",), True),
        "sd_mod": Loaded("sd_mod", 100, ("/devices/disk",), False)}
    # e1000 is no longer live: not carried. The third instance still knows the first's work.
    third = open_records(path, BOOT, frozenset({"ahci", "sd_mod"}), pid=300)
    assert [i.pid for i in third.history.instances] == [200]
    assert dict(third.history.loaded) == {
        "ahci": Loaded("ahci", 100, ("/devices/ahci",), True),
        "sd_mod": Loaded("sd_mod", 100, ("/devices/disk",), True)}


def test_a_fifo_at_the_path_is_not_read_and_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "loads"
    os.mkfifo(path)
    opened = open_records(str(path), BOOT, frozenset(), pid=1)
    assert opened.history.problems == (f"{path}: is a FIFO, ignoring",)
    assert opened.records.kept and path.is_file()


def test_a_long_running_instance_compacts_its_record(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loadrecords, "RECORD_FILE_COMPACT", 4096)
    path = tmp_path / "loads"
    opened = open_records(str(path), BOOT, frozenset(), pid=7)
    for _i in range(200):  # load and unload, over and over
        opened.records.inserting("dummy", "-")
        opened.records.inserted("dummy", 0)
        opened.records.removed("dummy")
    opened.records.inserting("ahci", "/devices/a")
    opened.records.inserted("ahci", 0)
    assert path.stat().st_size < 4096 + 200
    history = open_records(str(path), BOOT, frozenset({"ahci"}), pid=8).history
    assert dict(history.loaded) == {"ahci": Loaded("ahci", 7, ("/devices/a",), True)}


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                    str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_run_turns_the_record_off_once_and_says_why(tmp_path: Path) -> None:
    told: list[str] = []
    with small_tmpfs(tmp_path / "run", "8k") as run:
        path = run / "loads"
        opened = open_records(str(path), BOOT, frozenset(), pid=9, on_failure=told.append)
        filler = run / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            f.write(b"x" * 65536)  # /run is full now
        for i in range(100):
            opened.records.inserting(f"module_{i}", "/devices/" + "x" * 100)
        assert not opened.records.kept
        assert told == [f"cannot write {path}: No space left on device; module loads are no "
                        "longer recorded for the next instance"]
        assert opened.records.failure == told[0]
