"""A damaged module index never stops kmodd (issue 13, item 2 and the CLI half of item 7).

The real daemon, in-process on the simulated kernel: a damaged modules.dep.bin at start-up
runs it degraded (status says so, `kmodctl status` exits non-zero) until a reload onto a
repaired index loads what it could not; damage met on reload (any index file, its
structure and not only its header) keeps the last good generation and names the file and
the offset. The kmod front ends report a truncated index in one line, with exit status 1.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from kmodd.cli.kmodctl import dispatch
from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.system.journal import Priority
from kmodd.system.root import Root
from tests.daemon.daemon_tree import (
    KVER,
    MACHINE_MODULES,
    ListSink,
    RunningDaemon,
    kmodctl,
    wait_until,
    write_sysfs,
    write_tree,
)
from tests.fakes import FakeUeventSource

MODDIR = f"/lib/modules/{KVER}"
SERIAL_DEVPATH = "/devices/platform/serial8250"


def uevent(devpath: str, modalias: str, seqnum: int, subsystem: str) -> Uevent:
    env = {"ACTION": "add", "DEVPATH": devpath, "SUBSYSTEM": subsystem, "MODALIAS": modalias,
           "SEQNUM": str(seqnum)}
    return Uevent(Action.ADD, devpath, subsystem, seqnum, env)


def replace(path: Path, data: bytes) -> bytes:
    """Put `data` at `path` by rename (as depmod writes); return what was there."""
    good = path.read_bytes()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.rename(tmp, path)
    return good


def root_past_the_end(good: bytes) -> bytes:
    """The header stays valid; its root node word points far past the end of the file."""
    return good[:8] + (0x8FFFFFF0).to_bytes(4, "big") + good[12:]


@pytest.fixture
def root(tmp_path: Path) -> Root:
    tree = write_tree(tmp_path / "root", MACHINE_MODULES)
    write_sysfs(tmp_path / "root")
    return tree


def index(root: Root, name: str) -> Path:
    return Path(root.path(f"{MODDIR}/{name}"))


def outcome(daemon: object, devpath: str) -> str | None:
    devices = daemon.devices  # type: ignore[attr-defined]
    record = devices.table.devices.get(devpath) if devices is not None else None
    if record is None or record.finished is None or record.outcome is None:
        return None
    return str(record.outcome.value)


def test_a_damaged_dep_index_at_start_up_runs_degraded_until_a_reload_repairs_it(
        root: Root) -> None:
    dep = index(root, "modules.dep.bin")
    good = replace(dep, root_past_the_end(dep.read_bytes()))
    reason = f"{MODDIR}/modules.dep.bin: offset 0xffffff0: node offset outside the file"
    sink = ListSink()

    async def scenario() -> None:
        running = RunningDaemon(root, source=FakeUeventSource(), devices_root=root,
                                sink=sink, coldplug=True)
        async with running as daemon:
            await wait_until(lambda: daemon.coldplugged.is_set(), what="the coldplug")
            code, out, _ = await asyncio.to_thread(kmodctl, running.socket_path, "status")
            assert code == 1
            assert "   State: degraded\n" in out
            assert f"Degraded: {reason}\n" in out
            assert daemon.kernel.modules is not None
            assert "kmodd_serial" not in {m.name for m in running.fake.loaded}
            replace(dep, good)
            code, _, _ = await asyncio.to_thread(kmodctl, running.socket_path, "reload")
            assert code == 0
            code, out, _ = await asyncio.to_thread(kmodctl, running.socket_path, "status")
            assert (code, "   State: running\n" in out, "Degraded" in out) == (0, True, False)
            # The device seen while degraded is loaded now (the resync found it again).
            await wait_until(lambda: outcome(daemon, SERIAL_DEVPATH) == "inserted",
                             what="the serial port's driver")

    asyncio.run(scenario())
    errors = [m for p, m in sink.messages if p == Priority.ERR]
    assert errors == [f"Cannot read the module index: {reason}; no module is loaded until "
                      "a reload succeeds"]
    assert "Leaving degraded mode: module index generation 1 is usable" in sink.texts()


async def reload_onto(running: RunningDaemon, name: str, data: bytes) -> str:
    """Replace one index file, reload over Varlink; the failure's reason."""
    daemon = running.daemon
    replace(index(running.root, name), data)
    code, _, err = await asyncio.to_thread(kmodctl, running.socket_path, "reload")
    assert code != 0
    assert daemon.snapshots.current.generation == 1
    failure = daemon.snapshots.last_failure
    assert failure is not None
    assert failure.reason in err
    return failure.reason


def test_a_reload_onto_a_damaged_dep_index_keeps_the_last_good_generation(root: Root) -> None:
    dep = index(root, "modules.dep.bin")

    async def scenario() -> None:
        running = RunningDaemon(root, source=FakeUeventSource())
        async with running as daemon:
            reason = await reload_onto(running, "modules.dep.bin",
                                       root_past_the_end(dep.read_bytes()))
            assert reason == (f"{MODDIR}/modules.dep.bin: offset 0xffffff0: node offset "
                              "outside the file")
            assert daemon.lifecycle.state == "running"
            # The daemon goes on: it answers status.
            code, out, _ = await asyncio.to_thread(kmodctl, running.socket_path, "status")
            assert (code, "   State: running\n" in out) == (0, True)

    asyncio.run(scenario())


def test_a_reload_onto_a_half_truncated_symbols_index_is_refused_naming_the_file(
        root: Root) -> None:
    symbols = index(root, "modules.symbols.bin")

    async def scenario() -> None:
        running = RunningDaemon(root, source=FakeUeventSource())
        async with running:
            data = symbols.read_bytes()
            reason = await reload_onto(running, "modules.symbols.bin", data[: len(data) // 2])
            assert reason.startswith(f"{MODDIR}/modules.symbols.bin: offset 0x")

    asyncio.run(scenario())


def test_a_reload_onto_an_empty_builtin_alias_index_is_refused_naming_the_file(
        root: Root) -> None:
    async def scenario() -> None:
        running = RunningDaemon(root, source=FakeUeventSource())
        async with running:
            reason = await reload_onto(running, "modules.builtin.alias.bin", b"")
            assert reason == (
                f"{MODDIR}/modules.builtin.alias.bin: offset 0x0: the file is empty, but "
                "modules.builtin.modinfo is present (depmod writes an index from it): a "
                "damaged or unfinished write")

    asyncio.run(scenario())


#: A name whose lookup reaches each index: a modalias (alias), a module name (dep), a
#: name only the builtin index knows.
LOOKUP_REACHING = {"modules.alias.bin": "platform:serial8250",
                   "modules.dep.bin": "kmodd_serial", "modules.builtin.bin": "kmodd_rtc"}


def run_tool(root: Root, *argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    code = dispatch(["kmodctl", *argv], root=Root(), stdout=out, stderr=err,
                    environ={"PATH": "/usr/bin:/bin"})
    return code, out.getvalue().decode(), err.getvalue().decode()


@pytest.mark.parametrize("name", ["modules.alias.bin", "modules.dep.bin",
                                  "modules.builtin.bin"])
@pytest.mark.parametrize("tool", ["modprobe", "modinfo"])
def test_the_front_ends_report_a_truncated_index_in_one_line_and_exit_1(
        root: Root, name: str, tool: str) -> None:
    path = index(root, name)
    data = path.read_bytes()
    replace(path, data[: len(data) // 2])
    target = LOOKUP_REACHING[name]
    if tool == "modprobe":
        args = ["modprobe", "-d", root.prefix, "-S", KVER, "--show-depends",
                "-C", root.path("/etc/modprobe.d"), target]
    else:
        args = ["modinfo", "-b", root.prefix, "-k", KVER, "-F", "filename", target]
    code, _, err = run_tool(root, *args)
    shown = f"{root.prefix.rstrip('/')}{MODDIR}/{name}"
    assert code == 1
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{tool}: ERROR: {shown}: offset 0x")


def test_a_lookup_that_meets_damage_not_checked_at_start_up_degrades_until_a_good_reload(
        root: Root) -> None:
    # modules.alias.bin is checked whole only in the decode after the coldplug burst: a
    # hotplug before it meets the damage in a lookup.
    alias = index(root, "modules.alias.bin")
    good = alias.read_bytes()
    replace(alias, good[:len(good) // 2])
    sink = ListSink()

    async def scenario() -> None:
        source = FakeUeventSource()
        running = RunningDaemon(root, source=source, devices_root=root, sink=sink)
        async with running as daemon:
            source.push(uevent(SERIAL_DEVPATH, "platform:serial8250", 5, "platform"))
            await wait_until(lambda: daemon.lifecycle.state == "degraded", what="degraded")
            reason = daemon.lifecycle.degraded_reason
            assert reason is not None and reason.startswith(f"{MODDIR}/modules.alias.bin: "
                                                            "offset 0x")
            code, out, _ = await asyncio.to_thread(kmodctl, running.socket_path, "status")
            assert (code, f"Degraded: {reason}\n" in out) == (1, True)
            replace(alias, good)
            code, _, _ = await asyncio.to_thread(kmodctl, running.socket_path, "reload")
            assert code == 0 and daemon.lifecycle.state == "running"
            await wait_until(lambda: outcome(daemon, SERIAL_DEVPATH) == "inserted",
                             what="the serial port's driver, after the reload's resync")
            errors = [m for p, m in sink.messages if p == Priority.ERR]
            assert errors == [
                f"Cannot handle {SERIAL_DEVPATH}: the module index is damaged: {reason}",
                f"The module index is damaged: {reason}; devices whose lookup meets the "
                "damage are left until a reload succeeds"]

    asyncio.run(scenario())
