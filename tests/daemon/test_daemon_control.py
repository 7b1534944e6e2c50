"""The running daemon's control socket, through `kmodctl`, as root and as an unprivileged user.

Every reply is also checked against the io.kmodd IDL. Reading is open to everybody; Load,
Unload and Reload need root (or the admin group), and a refused call changes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmodd.cli.client import EXIT_PERMISSION
from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.core.varlink_idl import check_value, parse_interface
from kmodd.daemon.control.interface import IDL
from kmodd.daemon.service import Daemon
from kmodd.system.control_client import VarlinkClient
from kmodd.system.root import Root
from tests.daemon.daemon_tree import MACHINE_MODULES, RunningDaemon, kmodctl, wait_until, write_tree
from tests.fakes import FakeUeventSource
from tests.runas import RunAs

INTERFACE = parse_interface(IDL)
VIRTIO_NET = "/devices/pci0000:00/0000:00:03.0/virtio2"
PCSPKR = "/devices/platform/pcspkr"


def uevent(devpath: str, modalias: str, seqnum: int, subsystem: str) -> Uevent:
    env = {"ACTION": "add", "DEVPATH": devpath, "SUBSYSTEM": subsystem, "MODALIAS": modalias,
           "SEQNUM": str(seqnum)}
    return Uevent(Action.ADD, devpath, subsystem, seqnum, env)


@pytest.fixture
def root() -> Iterator[Root]:
    """A root an unprivileged user can reach the control socket in."""
    base = Path(tempfile.mkdtemp(prefix="kmodd-control-"))
    base.chmod(0o755)
    yield write_tree(base, MACHINE_MODULES)
    shutil.rmtree(base)


def checked(path: str, method: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a method and check the reply against the IDL."""
    with VarlinkClient(path) as client:
        reply = client.call(f"io.kmodd.{method}", parameters)
    problem = check_value(reply, INTERFACE.methods[method].output, INTERFACE)
    assert problem is None, f"{method} reply breaks the IDL at {problem}: {reply}"
    return reply


async def started(daemon: Daemon, source: FakeUeventSource) -> None:
    source.push(uevent(VIRTIO_NET, "virtio:d00000001v00001AF4", 11, "virtio"),
                uevent(PCSPKR, "platform:pcspkr", 12, "platform"))
    assert daemon.devices is not None
    records = daemon.devices.table.devices
    await wait_until(lambda: all(p in records and records[p].finished is not None
                                 for p in (VIRTIO_NET, PCSPKR)))


def test_every_method_as_root_answers_within_the_idl(root: Root) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            await started(daemon, source)
            path = running.socket_path

            def calls() -> None:
                status = checked(path, "GetStatus")
                assert status["status"]["state"] == "running"
                assert status["statistics"]["devices"] == 2
                assert status["statistics"]["outcomes"] == {
                    "inserted": 4, "blacklisted": 1}
                (device,) = checked(path, "ListDevices", {"devpath": VIRTIO_NET})["devices"]
                assert device["candidates"] == ["kmodd_virtio_net"]
                assert [(s["action"], s["module"]) for s in device["plan"]] == [
                    ("insert", "kmodd_core"), ("insert", "kmodd_virtio_pci"),
                    ("insert", "kmodd_net_failover"), ("insert", "kmodd_virtio_net")]
                assert device["outcome"] == "inserted"
                assert device["queued_usec"] <= device["started_usec"] <= \
                    device["finished_usec"]
                modules = checked(path, "ListModules")["modules"]
                assert [(m["name"], m["state"]) for m in modules] == [
                    ("kmodd_core", "live"), ("kmodd_net_failover", "live"),
                    ("kmodd_pcspkr", "not-loaded"), ("kmodd_virtio_net", "live"),
                    ("kmodd_virtio_pci", "live")]
                why = checked(path, "Why", {"target": PCSPKR})["report"]
                (candidate,) = why["candidates"]
                assert (candidate["module"], candidate["source"], candidate["decision"]) == \
                    ("kmodd_pcspkr", "modules.alias", "blacklisted")
                assert candidate["reason"].startswith(
                    "blacklisted by /etc/modprobe.d/kmodd-test.conf:1;")
                explanation = checked(path, "Explain", {"module": "kmodd_virtio_net"})
                expl = explanation["explanation"]
                assert (expl["modules"], expl["verdict"]) == (["kmodd_virtio_net"], "ok")
                assert [(f["check"], f["summary"]) for f in expl["findings"]][1:4] == [
                    ("state", "already loaded"),
                    ("file", "the module file is there and reads as a module"),
                    ("dependencies", "modprobe loads its dependencies first: kmodd_core "
                     "(live), kmodd_virtio_pci (live), kmodd_net_failover (live)")]
                seen, live = explanation["seen"]
                assert seen.startswith("kmodd's last outcome for kmodd_virtio_net: inserted "
                                       "for /devices/pci0000:00/0000:00:03.0/virtio2, ")
                assert live == "kmodd_virtio_net is live: loaded by this kmodd"
                loaded = checked(path, "Load", {"modules": ["kmodd_pcspkr"]})["results"]
                assert [(r["module"], r["outcome"]) for r in loaded] == [
                    ("kmodd_pcspkr", "inserted")]
                unloaded = checked(path, "Unload", {"modules": ["kmodd_pcspkr"]})["results"]
                assert [(r["module"], r["outcome"]) for r in unloaded] == [
                    ("kmodd_pcspkr", "removed")]
                assert checked(path, "Reload") == {"generation": 2}

            await asyncio.to_thread(calls)

    asyncio.run(scenario())


def test_kmodctl_as_root_and_as_nobody(root: Root, as_nobody: RunAs) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            await started(daemon, source)
            path = running.socket_path

            code, out, err = await asyncio.to_thread(kmodctl, path, "why", PCSPKR)
            assert (code, err) == (0, "")
            assert out.splitlines()[:2] == [f"Device: {PCSPKR}", "Modalias: platform:pcspkr"]

            def as_user() -> str:
                results = [kmodctl(path, "--json", "status"),
                           kmodctl(path, "modules", "kmodd_virtio_net"),
                           kmodctl(path, "load", "kmodd_pcspkr"),
                           kmodctl(path, "unload", "kmodd_virtio_net"),
                           kmodctl(path, "reload")]
                return json.dumps(results)

            results = json.loads(await asyncio.to_thread(as_nobody, as_user))
            status, modules, load, unload, reload = results
            assert status[0] == 0 and json.loads(status[1])["status"]["state"] == "running"
            assert modules[0] == 0
            assert modules[1].splitlines()[1].split()[:3] == ["kmodd_virtio_net", "live",
                                                              "inserted"]
            denied = "permission denied (run as root)\n"
            assert load == [EXIT_PERMISSION, "", f"kmodctl: load: {denied}"]
            assert unload == [EXIT_PERMISSION, "", f"kmodctl: unload: {denied}"]
            assert reload == [EXIT_PERMISSION, "", f"kmodctl: reload: {denied}"]
            # Nothing the refused calls asked for happened.
            live = {m.name for m in running.fake.loaded}
            assert "kmodd_pcspkr" not in live and "kmodd_virtio_net" in live
            assert daemon.snapshots.current.generation == 1

            code, out, _ = await asyncio.to_thread(kmodctl, path, "load", "kmodd_pcspkr")
            assert (code, out.splitlines()[0]) == (0, "kmodd_pcspkr: inserted: "
                                                      "Inserted module 'kmodd_pcspkr'")

    asyncio.run(scenario())


def test_monitor_streams_outcomes_as_they_happen(root: Root) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            path = running.socket_path
            client = await asyncio.to_thread(VarlinkClient, path)
            stream = client.stream("io.kmodd.Monitor")
            assert daemon.hub is not None
            first = asyncio.ensure_future(asyncio.to_thread(next, stream))
            await wait_until(lambda: daemon.hub.subscribers == 1)
            await started(daemon, source)
            events = [(await first)["event"]]
            while len([e for e in events if e["kind"] == "inserted"]) < 4:
                events.append((await asyncio.to_thread(next, stream))["event"])
            client.close()
            inserted = [(e["module"], e["devpath"]) for e in events if e["kind"] == "inserted"]
            assert inserted == [("kmodd_core", VIRTIO_NET), ("kmodd_virtio_pci", VIRTIO_NET),
                                ("kmodd_net_failover", VIRTIO_NET),
                                ("kmodd_virtio_net", VIRTIO_NET)]
            kinds = [e["kind"] for e in events]
            assert kinds.index("uevent") < kinds.index("inserted")

    asyncio.run(scenario())


def test_the_control_plane_is_loaded_when_a_client_first_connects_during_a_load(
        root: Root) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        running.syscalls.hold("virtio_net")
        async with running as daemon:
            source.push(uevent(VIRTIO_NET, "virtio:d00000001v00001AF4", 11, "virtio"))
            await asyncio.to_thread(running.syscalls.wait_active, 1)
            assert daemon.control is None  # nothing asked for it, and a load is running
            status = await asyncio.to_thread(checked, running.socket_path, "GetStatus")
            assert daemon.control is not None
            assert status["status"]["state"] == "running"
            running.syscalls.open()
            await daemon.coldplugged.wait()

    asyncio.run(scenario())


def test_without_clients_the_control_plane_is_loaded_once_the_coldplug_burst_is_over(
        root: Root) -> None:
    async def scenario() -> None:
        running = RunningDaemon(root, source=FakeUeventSource())
        async with running as daemon:
            await daemon.coldplugged.wait()
            assert daemon.control is not None
            status = await asyncio.to_thread(checked, running.socket_path, "GetStatus")
            assert status["status"]["coldplug_done"] is True

    asyncio.run(scenario())


def test_list_modules_gives_each_inserts_wait_and_the_module_it_waited_for(root: Root) -> None:
    """The timeline of `kmodctl plot` and `critical-chain`: per module, when its chain was
    asked for, its finit_module, the module of its chain it waited for, and the device."""
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            await started(daemon, source)
            path = running.socket_path
            reply = await asyncio.to_thread(checked, path, "ListModules")
            modules = {m["name"]: m for m in reply["modules"]}
            chain = ["kmodd_core", "kmodd_virtio_pci", "kmodd_net_failover",
                     "kmodd_virtio_net"]
            assert [(modules[n].get("after"), modules[n]["device"]) for n in chain] == [
                (None, VIRTIO_NET), ("kmodd_core", VIRTIO_NET),
                ("kmodd_virtio_pci", VIRTIO_NET), ("kmodd_net_failover", VIRTIO_NET)]
            queued = {modules[n]["queued_usec"] for n in chain}
            assert len(queued) == 1  # one chain, asked for once
            for before, after in itertools.pairwise(chain):
                assert modules[before]["finished_usec"] <= modules[after]["started_usec"]
            for n in chain:
                assert modules[n]["queued_usec"] <= modules[n]["started_usec"] <= \
                    modules[n]["finished_usec"]
            blacklisted = modules["kmodd_pcspkr"]
            assert [k for k in ("queued_usec", "after", "device", "started_usec")
                    if k in blacklisted] == []

    asyncio.run(scenario())
