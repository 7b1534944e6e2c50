"""Reloading: on request (SIGHUP's path), on modprobe.d or index changes (inotify), over
Varlink; a damaged index is kept out, the old snapshot stays, and the reason names the file
and the offset.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.daemon.service import Daemon
from kmodd.system.control_client import VarlinkClient, VarlinkClientError
from kmodd.system.journal import Priority
from kmodd.system.root import Root
from tests.daemon.daemon_tree import (
    KVER,
    MACHINE_MODULES,
    ListSink,
    RunningDaemon,
    wait_until,
    write_tree,
)
from tests.fakes import FakeUeventSource

SERIAL = "platform:serial8250"
HOST_BRIDGE = "pci:v00008086d00000D57sv00000000sd00000000bc06sc00i00"


def uevent(devpath: str, modalias: str, seqnum: int) -> Uevent:
    env = {"ACTION": "add", "DEVPATH": devpath, "SUBSYSTEM": "platform", "MODALIAS": modalias,
           "SEQNUM": str(seqnum)}
    return Uevent(Action.ADD, devpath, "platform", seqnum, env)


def outcome_when_done(daemon: Daemon, devpath: str) -> str | None:
    assert daemon.devices is not None
    record = daemon.devices.table.devices.get(devpath)
    if record is None or record.finished is None or record.outcome is None:
        return None
    return record.outcome.value


def damage(path: Path) -> bytes:
    """Point the index's root node past the end of the file (the header stays valid);
    return the good bytes. Written by rename, as depmod replaces its files."""
    good = path.read_bytes()
    bad = good[:8] + (0x8FFFFFF0).to_bytes(4, "big") + good[12:]  # a prefix node, far away
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bad)
    os.rename(tmp, path)
    return good


@pytest.fixture
def root(tmp_path: Path) -> Root:
    return write_tree(tmp_path / "root", MACHINE_MODULES)


def test_a_reload_request_swaps_in_a_generation_that_later_events_use(root: Root) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        async with RunningDaemon(root, source=source) as daemon:
            assert daemon.snapshots.current.generation == 1
            Path(root.path("/etc/modprobe.d/late.conf")).write_text(
                "blacklist kmodd_host_bridge\n")
            daemon.request_reload()  # what SIGHUP does
            await wait_until(lambda: daemon.snapshots.current.generation == 2)
            source.push(uevent("/devices/host", HOST_BRIDGE, 1))
            await wait_until(lambda: outcome_when_done(daemon, "/devices/host") is not None)
            assert outcome_when_done(daemon, "/devices/host") == "blacklisted"

    asyncio.run(scenario())


def test_modprobe_d_changes_reload_by_themselves(root: Root) -> None:
    source = FakeUeventSource()
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, source=source, sink=sink, watch_config=True,
                                 reload_debounce=0.05) as daemon:
            await asyncio.sleep(0.1)  # the watcher is set up in its task
            Path(root.path("/etc/modprobe.d/late.conf")).write_text(
                "blacklist kmodd_serial\n")
            await wait_until(lambda: daemon.snapshots.current.generation == 2)
            assert "kmodd_serial" in daemon.snapshots.current.config.blacklists
            source.push(uevent("/devices/serial", SERIAL, 1))
            await wait_until(lambda: outcome_when_done(daemon, "/devices/serial") is not None)
            assert outcome_when_done(daemon, "/devices/serial") == "blacklisted"

    asyncio.run(scenario())
    assert any(m.startswith("Reloading the module index and configuration (changed: ")
               and "/etc/modprobe.d/late.conf" in m for m in sink.texts())


def test_a_damaged_index_is_kept_out_and_the_old_snapshot_goes_on(root: Root) -> None:
    source = FakeUeventSource()
    sink = ListSink()
    alias_bin = Path(root.path(f"/lib/modules/{KVER}/modules.alias.bin"))
    shown = f"/lib/modules/{KVER}/modules.alias.bin"

    async def scenario() -> None:
        running = RunningDaemon(root, source=source, sink=sink, watch_config=True,
                                reload_debounce=0.05)
        async with running as daemon:
            await asyncio.sleep(0.1)
            good = damage(alias_bin)
            await wait_until(lambda: daemon.snapshots.last_failure is not None,
                             what="the failed reload")
            assert daemon.snapshots.current.generation == 1
            failure = daemon.snapshots.last_failure
            assert failure is not None
            assert failure.reason == \
                f"{shown}: offset 0xffffff0: node prefix runs past the file's end"
            # The old snapshot still answers.
            source.push(uevent("/devices/serial", SERIAL, 1))
            await wait_until(lambda: outcome_when_done(daemon, "/devices/serial") is not None)
            assert outcome_when_done(daemon, "/devices/serial") == "inserted"
            # Varlink Reload says why it failed, and keeps the generation too.
            path = running.socket_path

            def reload() -> str:
                with VarlinkClient(path) as client:
                    try:
                        client.call("io.kmodd.Reload")
                    except VarlinkClientError as e:
                        return f"{e.name} {e.parameters['reason']}"
                return "no error"

            assert await asyncio.to_thread(reload) == f"io.kmodd.ReloadFailed {failure.reason}"
            assert daemon.snapshots.current.generation == 1
            # Repaired, it reloads by itself.
            tmp = alias_bin.with_name("repair.tmp")
            tmp.write_bytes(good)
            os.rename(tmp, alias_bin)
            await wait_until(lambda: daemon.snapshots.current.generation == 2)

    asyncio.run(scenario())
    errors = [m for p, m in sink.messages if p == Priority.ERR]
    assert errors[0] == (f"Reload failed, keeping generation 1: {shown}: offset 0xffffff0: "
                         "node prefix runs past the file's end")


def test_a_varlink_reload_answers_the_new_generation(root: Root) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            def reload() -> int:
                with VarlinkClient(running.socket_path) as client:
                    return int(client.call("io.kmodd.Reload")["generation"])

            assert await asyncio.to_thread(reload) == 2
            assert await asyncio.to_thread(reload) == 3
            assert daemon.snapshots.current.generation == 3

    asyncio.run(scenario())
