"""The whole daemon on real uevents: this machine's devices, a fixture index, a simulated kernel.

Writing `add` to a device's `/sys/.../uevent` file makes the kernel broadcast the device's
real uevent (with MODALIAS) on NETLINK_KOBJECT_UEVENT. The daemon runs in-process on a test
root whose module index the real depmod built from fixture modules aliased to these devices,
and "loads" into the simulated kernel. What it inserts for each device must be what the
real modprobe plans with udev's flags (`--show-depends -b`). Needs root (as CI runs).
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from kmodd.daemon.intake import Origin
from kmodd.daemon.service import Daemon
from kmodd.system.netlink import KERNEL_GROUP, NETLINK_KOBJECT_UEVENT, DropReason
from kmodd.system.root import Root
from kmodd.system.sysfs import scan_devices
from tests.daemon.daemon_tree import (
    MACHINE_MODULES,
    RunningDaemon,
    kmod_plan,
    wait_until,
    write_tree,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="writes to /sys and binds group 1"),
]

#: Enough uevents to overflow the smallest receive buffer many times over.
BURST = 3000


def _devices() -> dict[str, str]:
    """devpath -> modalias of every device whose uevent file makes the kernel broadcast."""
    return {d.devpath: d.modalias for d in scan_devices(Root()).devices if d.subsystem}


def _trigger(devpath: str) -> None:
    with open(f"/sys{devpath}/uevent", "w") as f:
        f.write("add")


def _from_kernel(daemon: Daemon, devpaths: set[str]) -> bool:
    assert daemon.devices is not None
    records = daemon.devices.table.devices
    return all(p in records and records[p].origin is Origin.KERNEL and records[p].seqnum > 0
               and records[p].finished is not None for p in devpaths)


@pytest.fixture
def machine_root(tmp_path: Path) -> Root:
    return write_tree(tmp_path / "root", MACHINE_MODULES)


def test_real_uevents_load_what_kmod_plans_for_each_device(machine_root: Root) -> None:
    devices = _devices()
    plans = {p: kmod_plan(machine_root, m) for p, m in devices.items()}
    assert any(plans.values()), "no device of this machine matches a fixture module"

    async def scenario() -> None:
        running = RunningDaemon(machine_root, devices_root=Root(), receive_buffer=4 << 20)
        async with running as daemon:
            for devpath in devices:
                _trigger(devpath)
            await wait_until(lambda: _from_kernel(daemon, set(devices)), what="every device")
            assert daemon.devices is not None
            records = daemon.devices.table.devices
            for devpath, modalias in devices.items():
                # The kernel's cpu uevents end MODALIAS with a newline; sysfs's file has none.
                assert (records[devpath].modalias or "").rstrip("\n") == modalias
                loaded = [s.module for c in records[devpath].chains
                          for s in c.result.steps if not c.joined]
                # Inserted for this device, or already there from an earlier device.
                assert set(loaded) <= set(plans[devpath])
            fake = running.fake
            live = {m.name for m in fake.loaded}
            wanted = {name for plan in plans.values() for name in plan}
            assert live == wanted
            inserts = [name for call, name in fake.calls if call == "finit_module"]
            assert sorted(inserts) == sorted(wanted)  # each module once, however many devices
            order = [m.name for m in reversed(fake.loaded)]  # the kernel lists newest first
            for plan in plans.values():  # every chain in kmod's order: dependencies first
                positions = [order.index(name) for name in plan]
                assert positions == sorted(positions)
            blacklisted = [p for p, m in devices.items() if m == "platform:pcspkr"]
            for devpath in blacklisted:
                outcome = records[devpath].outcome
                assert outcome is not None and outcome.value == "blacklisted"

    asyncio.run(scenario())


FORGED = (b"add@/devices/kmodd-forged\0ACTION=add\0DEVPATH=/devices/kmodd-forged\0"
          b"SUBSYSTEM=platform\0MODALIAS=platform:serial8250\0SEQNUM=1\0")


def test_forged_uevents_are_rejected_counted_and_load_nothing(machine_root: Root) -> None:
    devices = _devices()
    witness = next(iter(devices))

    async def scenario() -> None:
        running = RunningDaemon(machine_root, devices_root=Root(), receive_buffer=4 << 20)
        async with running as daemon:
            assert daemon.intake is not None
            port_id = daemon.intake.source.port_id  # type: ignore[attr-defined]
            forger = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
            forger.bind((0, 0))
            for _ in range(7):
                forger.sendto(FORGED, (0, KERNEL_GROUP))  # multicast as root: port id not 0
            forger.sendto(FORGED, (port_id, 0))  # unicast to the daemon's port id
            forger.close()
            _trigger(witness)  # a real event after the forged ones: the daemon saw them all
            await wait_until(lambda: _from_kernel(daemon, {witness}), what="the real event")
            stats = daemon.start_control().statistics()
            assert stats.uevents_dropped == {DropReason.SENDER_NOT_KERNEL.value: 8}
            assert daemon.devices is not None
            assert "/devices/kmodd-forged" not in daemon.devices.table.devices
            assert all(dev != "/devices/kmodd-forged" for m in daemon.devices.table.modules.values()
                       for dev in m.devices)

    asyncio.run(scenario())


def test_a_burst_into_a_tiny_buffer_is_lost_resynced_and_every_device_gets_its_modules(
        machine_root: Root) -> None:
    devices = _devices()
    wanted = {name for m in devices.values() for name in kmod_plan(machine_root, m)}
    paths = list(devices)

    async def scenario() -> None:
        # 4096 is the setting's minimum; the kernel makes it its smallest buffer.
        running = RunningDaemon(machine_root, devices_root=Root(), receive_buffer=4096)
        async with running as daemon:
            fds = [os.open(f"/sys{p}/uevent", os.O_WRONLY) for p in paths]
            try:
                # Written without yielding to the event loop: nothing is read meanwhile.
                for i in range(BURST):
                    os.write(fds[i % len(fds)], b"add")
            finally:
                for fd in fds:
                    os.close(fd)
            control = daemon.start_control()
            await wait_until(lambda: control.statistics().resyncs >= 1, what="a resync")
            await wait_until(lambda: {m.name for m in running.fake.loaded} == wanted
                             and daemon.loader is not None and daemon.loader.busy == 0,
                             what="every device's modules")
            stats = control.statistics()
            assert stats.overruns >= 1
            assert daemon.devices is not None
            assert set(paths) <= set(daemon.devices.table.devices)
            inserts = [n for call, n in running.fake.calls if call == "finit_module"]
            assert sorted(inserts) == sorted(wanted)
            messages = running.logged.texts()
            assert any(m.startswith("Resynchronised from sysfs") for m in messages)

    asyncio.run(scenario())


def test_coldplug_after_ready_loads_for_every_device_with_hotplug_running(
        machine_root: Root) -> None:
    devices = _devices()
    wanted = {name for m in devices.values() for name in kmod_plan(machine_root, m)}

    async def scenario() -> None:
        running = RunningDaemon(machine_root, devices_root=Root(), coldplug=True,
                                receive_buffer=4 << 20)
        async with running as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 60)
            assert daemon.lifecycle.coldplug_done
            assert {m.name for m in running.fake.loaded} == wanted
            assert daemon.devices is not None
            records = daemon.devices.table.devices
            assert set(devices) <= set(records)
            ready = daemon.lifecycle.ready
            assert ready is not None
            assert all(records[p].queued >= ready for p in devices
                       if records[p].origin is Origin.COLDPLUG)
            # Hotplug still runs: a device re-added now is handled from its real uevent.
            devpath = next(iter(devices))
            _trigger(devpath)
            await wait_until(lambda: _from_kernel(daemon, {devpath}), what="a hotplug event")

    asyncio.run(scenario())
