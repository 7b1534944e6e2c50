"""An instance that ends without stopping, and the one after it: every load is accounted for,
and a device its dying predecessor left without a driver is re-probed once.

The daemons run in-process on the fixture index, the simulated kernel and a fake sysfs (one
device of each test's choosing, bound and unbound by `SimulatedBinding` as the kernel would).
"Ending without stopping" is what SIGKILL leaves: the record file gets nothing more (not even
the `done` of the insert in flight), the stop sequence never runs, and the insert's thread
finishes in the kernel afterwards: here the gate of the held insert opens after the daemon is
gone, and the device stays unbound, as the probe inside a dying process fails.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from kmodd.core.autoload.loadrecords import Kind, parse
from kmodd.core.autoload.messages import Message
from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.daemon.service import Daemon
from kmodd.system.journal import Priority
from kmodd.system.loadrecords import RECORD_FILE
from kmodd.system.root import Root
from tests.daemon.daemon_tree import (
    MACHINE_MODULES,
    ListSink,
    RunningDaemon,
    fake_kernel,
    kmodctl,
    wait_until,
    write_sysfs,
    write_tree,
)
from tests.fakes import (
    FakeKernel,
    FakeUeventSource,
    GatedSyscalls,
    SimulatedBinding,
)

SERIAL = "/devices/platform/serial8250"
VIRTIO = "/devices/pci0000:00/0000:00:03.0"
DRIVERS = {"kmodd_serial": ["platform:serial8250"]}
DRIVES = {SERIAL: ("kmodd_serial", "platform:serial8250")}
#: What the fixture's other devices load (the virtio NIC's chain).
OTHERS = {"kmodd_core", "kmodd_virtio_pci", "kmodd_net_failover", "kmodd_virtio_net"}


@pytest.fixture
def root(tmp_path: Path) -> Root:
    base = tmp_path / "root"
    root = write_tree(base, MACHINE_MODULES)
    write_sysfs(base)
    return root


def kernel(root: Root) -> FakeKernel:
    return fake_kernel(root, drivers=DRIVERS)


def running(root: Root, fake: FakeKernel, binding: SimulatedBinding,
            gated: GatedSyscalls | None = None, **kwargs: Any) -> RunningDaemon:
    kwargs.setdefault("coldplug", True)
    # Not the machine's netlink socket: the tree's device paths are real ones
    # (/devices/platform/serial8250), and a real `add` of one by any process of the host would
    # reach the daemon as a live uevent: the device would not be "already there" (re-probe
    # rule 1), and the test would wait for a re-probe that rightly never comes.
    kwargs.setdefault("source", FakeUeventSource())
    return RunningDaemon(root, kernel=gated or GatedSyscalls(fake), devices_root=root,
                         binding=binding, **kwargs)


async def end_without_stopping(run: RunningDaemon) -> None:
    """What SIGKILL does to the daemon, as far as the next instance can tell."""
    daemon = run.daemon
    assert daemon.loader is not None and daemon.loader.records is not None
    daemon.loader.records.close()  # a dead process writes nothing more
    assert run._task is not None
    run._task.cancel()
    await asyncio.gather(run._task, return_exceptions=True)


def records_in(root: Root) -> list[tuple[str, tuple[str, ...]]]:
    with open(root.path(RECORD_FILE), "rb") as f:
        parsed, problems = parse(f.read(), RECORD_FILE)
    assert problems == []
    return [(r.kind.value, r.fields) for r in parsed]


def module_view(daemon: Daemon, name: str) -> dict[str, object]:
    assert daemon.control is not None or daemon.start_control() is not None
    control = daemon.control or daemon.start_control()
    (view,) = control.modules(name)
    return {"loaded_by": view.loaded_by, "loaded_by_pid": view.loaded_by_pid}


async def killed_while_inserting_serial(root: Root, fake: FakeKernel,
                                        binding: SimulatedBinding) -> None:
    """Instance 1 coldplugs, is killed inside kmodd_serial's insert; the insert then ends in
    the kernel with the device unbound (its probe failed in the dying process)."""
    gated = GatedSyscalls(fake)
    gated.hold("kmodd_serial")
    first = running(root, fake, binding, gated=gated)
    await first.__aenter__()
    await wait_until(lambda: gated.started.get("kmodd_serial") == 1,
                     what="kmodd_serial's insert in flight")
    await wait_until(lambda: {f[0] for k, f in records_in(root) if k == "done"} >= OTHERS,
                     what="the other devices' modules loaded and recorded")
    await end_without_stopping(first)
    gated.open()
    await wait_until(lambda: (m := fake.module("kmodd_serial")) is not None
                     and m.state == "live", what="kmodd_serial live")
    assert binding.driver(SERIAL) is None


def test_a_device_left_unbound_by_an_instance_killed_in_its_drivers_insert_is_reprobed_and_bound(
        root: Root) -> None:
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)

    async def scenario() -> None:
        await killed_while_inserting_serial(root, fake, binding)
        sink = ListSink()
        async with running(root, fake, binding, sink=sink) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
            assert daemon.devices is not None
            await wait_until(lambda: daemon.devices is not None
                             and daemon.devices.table.devices[SERIAL].reprobe is not None,
                             what="the re-probe of the serial port")
            assert daemon.devices is not None
            reprobe = daemon.devices.table.devices[SERIAL].reprobe
            assert reprobe is not None
            assert (reprobe.result.value, reprobe.driver, reprobe.reason) == (
                "bound", "serial8250", "it had no driver, although its driver module "
                "kmodd_serial (serial8250) was live before this instance started")
            assert binding.probes == [SERIAL]
            assert binding.driver(SERIAL) == "serial8250"
            pid = os.getpid()
            assert sink.of_kind(Message.REPROBED) == [(
                Priority.NOTICE, f"Re-probed {SERIAL}: it had no driver, although its driver "
                "module kmodd_serial (serial8250) was live before this instance started; "
                "driver serial8250 took it")]
            assert [m for m in sink.of_kind(Message.LOADED_BEFORE) if "kmodd_serial" in m[1]] \
                == [(Priority.INFO, f"Module kmodd_serial is live: loaded by the previous "
                                    f"instance (pid {pid}) for {SERIAL}, which ended before the "
                                    "insert returned")]
            (previous,) = [m for m in sink.of_kind(Message.PREVIOUS_INSTANCE)
                           if m[1].startswith("The previous")]
            assert previous[0] is Priority.WARNING
            assert previous[1] == (
                f"The previous instance (pid {pid}) ended without stopping; it loaded 5 of the "
                "5 modules live now, 1 of them while it ended (their inserts had not "
                "returned): kmodd_serial.")
            status = (daemon.control or daemon.start_control()).status()
            assert status.previous_instance is not None
            assert (status.previous_instance.pid, status.previous_instance.stopped,
                    status.previous_instance.unfinished) == (pid, False, 1)
            assert module_view(daemon, "kmodd_serial") == {
                "loaded_by": "previous-instance", "loaded_by_pid": pid}
            path = daemon.root.path("/run/kmodd/io.kmodd")
            code, out, _ = await asyncio.to_thread(kmodctl, path, "status")
            assert f"Previous: pid {pid} ended without stopping; it had loaded 5 of the live " \
                   "modules, 1 of them while it ended\n" in out
            code, out, _ = await asyncio.to_thread(kmodctl, path, "devices", SERIAL)
            row = out.splitlines()[1]
            assert (code, row.startswith(SERIAL),
                    "already-loaded, reprobed: bound (serial8250)" in row) == (0, True, True)
            assert ("Reprobe: reprobed: bound (serial8250): it had no driver, although its "
                    "driver module kmodd_serial (serial8250) was live before this instance "
                    "started\n") in out
            code, out, _ = await asyncio.to_thread(kmodctl, path, "why", "kmodd-serial")
            assert (code, out) == (0, f"kmodd_serial is live: loaded by the previous kmodd "
                                      f"instance (pid {pid}); for {SERIAL}\n")
        # The record now says: a re-probe, then a stop in order.
        kinds = records_in(root)
        assert ("reprobe", (SERIAL, "bound")) in kinds
        assert kinds[-1] == ("stop", ())

    asyncio.run(scenario())


def test_a_device_whose_driver_was_still_initialising_when_the_next_instance_started_is_reprobed(
        root: Root) -> None:
    """The killed instance's insert outlives it in the kernel: the next instance finds the
    module coming (not live), plans to load it, and its insert answers EEXIST once the init
    ends. The device its dying predecessor's probe left unbound is re-probed all the same."""
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)

    async def scenario() -> None:
        await killed_while_inserting_serial(root, fake, binding)
        fake.set_state("kmodd_serial", "coming")  # its init is still running
        gated = GatedSyscalls(fake)
        gated.hold("kmodd_serial")
        async with running(root, fake, binding, gated=gated) as daemon:
            await wait_until(lambda: gated.started.get("kmodd_serial") == 1,
                             what="the second insert, waiting for the first init")
            fake.set_state("kmodd_serial", "live")  # the init ends; the kernel says EEXIST
            gated.open()
            await wait_until(lambda: daemon.devices is not None
                             and daemon.devices.table.devices[SERIAL].reprobe is not None,
                             what="the re-probe of the serial port")
            assert daemon.devices is not None
            reprobe = daemon.devices.table.devices[SERIAL].reprobe
            assert reprobe is not None
            assert (reprobe.result.value, reprobe.driver) == ("bound", "serial8250")
            assert [n for c, n in fake.calls if c == "finit_module"].count("kmodd_serial") == 2
        assert binding.probes == [SERIAL]

    asyncio.run(scenario())


def test_an_insert_that_ends_after_the_next_instance_started_is_attributed_and_reprobed(
        root: Root) -> None:
    """The killed instance's insert had not even made its module visible when the next
    instance started: the module goes live later, is the previous instance's (not 'not
    kmodd'), and the device it left unbound is re-probed when a scan finds it."""
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)
    source = FakeUeventSource()

    async def scenario() -> None:
        gated = GatedSyscalls(fake)
        gated.hold("kmodd_serial")
        first = running(root, fake, binding, gated=gated)
        await first.__aenter__()
        await wait_until(lambda: gated.started.get("kmodd_serial") == 1)
        await wait_until(lambda: {f[0] for k, f in records_in(root) if k == "done"} >= OTHERS)
        await end_without_stopping(first)
        sink = ListSink()
        async with running(root, fake, binding, source=source, sink=sink,
                           coldplug=False) as daemon:
            assert fake.module("kmodd_serial") is None  # not in the kernel at this start
            gated.open()  # the dead instance's insert ends; its probe failed
            await wait_until(lambda: (m := fake.module("kmodd_serial")) is not None
                             and m.state == "live")
            source.push(Uevent(Action.ADD, "/module/kmodd_serial", "module", 11, {
                "ACTION": "add", "DEVPATH": "/module/kmodd_serial", "SUBSYSTEM": "module",
                "SEQNUM": "11"}))
            await wait_until(lambda: module_view(daemon, "kmodd_serial")["loaded_by"]
                             is not None)
            assert module_view(daemon, "kmodd_serial") == {
                "loaded_by": "previous-instance", "loaded_by_pid": os.getpid()}
            assert sink.of_kind(Message.LOADED_ELSEWHERE) == []
            assert daemon.intake is not None
            daemon.intake.request_resync("a test")
            await wait_until(lambda: daemon.devices is not None
                             and SERIAL in daemon.devices.table.devices
                             and daemon.devices.table.devices[SERIAL].reprobe is not None)
            assert daemon.devices is not None
            reprobe = daemon.devices.table.devices[SERIAL].reprobe
            assert reprobe is not None and reprobe.result.value == "bound"
        assert binding.probes == [SERIAL]

    asyncio.run(scenario())


def serial_add(seqnum: int, **extra: str) -> Uevent:
    env = {"ACTION": "add", "DEVPATH": SERIAL, "SUBSYSTEM": "platform",
           "MODALIAS": "platform:serial8250", "SEQNUM": str(seqnum), **extra}
    return Uevent(Action.ADD, SERIAL, "platform", seqnum, env)


@pytest.mark.parametrize(("extra", "probed"), [
    ({"SYNTH_UUID": "0"}, [SERIAL]),  # `udevadm trigger`: the device existed already
    ({}, []),  # the kernel added the device: it has just probed every driver itself
])
def test_a_device_udevadm_trigger_replays_is_reprobed_one_the_kernel_adds_is_not(
        root: Root, extra: dict[str, str], probed: list[str]) -> None:
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)
    source = FakeUeventSource()

    async def scenario() -> None:
        await killed_while_inserting_serial(root, fake, binding)
        async with running(root, fake, binding, source=source, coldplug=False) as daemon:
            source.push(serial_add(41, **extra))
            await wait_until(lambda: daemon.devices is not None
                             and SERIAL in daemon.devices.table.devices
                             and daemon.devices.table.devices[SERIAL].finished is not None)
            if probed:
                await wait_until(lambda: daemon.devices is not None
                                 and daemon.devices.table.devices[SERIAL].reprobe is not None)
            else:
                await asyncio.sleep(0.3)  # a re-probe, were there one, would have started
        assert binding.probes == probed

    asyncio.run(scenario())


def test_a_device_whose_add_a_killed_instance_read_is_handled_by_the_scan_after_its_bind(
        root: Root) -> None:
    """The killed instance read the device's `add`; its `bind` was still queued in the
    socket for the next one. That `bind` says nothing about loading: the coldplug scan must
    still decide the device (and load what it needs)."""
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)
    source = FakeUeventSource()
    bind = Uevent(Action.BIND, SERIAL, "platform", 50, {
        "ACTION": "bind", "DEVPATH": SERIAL, "SUBSYSTEM": "platform", "DRIVER": "other",
        "SEQNUM": "50"})

    async def scenario() -> None:
        source.push(bind)  # queued before the daemon reads anything: handled before coldplug
        async with running(root, fake, binding, source=source) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
            assert daemon.devices is not None
            record = daemon.devices.table.devices.get(SERIAL)
            assert record is not None and record.candidates == ("kmodd_serial",)
        assert fake.module("kmodd_serial") is not None

    asyncio.run(scenario())


def test_the_instance_after_one_that_stopped_in_order_says_so_and_probes_nothing(
        root: Root) -> None:
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)

    async def scenario() -> None:
        async with running(root, fake, binding) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
        binding.bind(SERIAL)  # what kmodd_serial's init did
        sink = ListSink()
        async with running(root, fake, binding, sink=sink) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
            status = (daemon.control or daemon.start_control()).status()
            assert status.previous_instance is not None
            assert (status.previous_instance.stopped, status.previous_instance.unfinished) == (
                True, 0)
            (previous,) = [m for m in sink.of_kind(Message.PREVIOUS_INSTANCE)
                           if m[1].startswith("The previous")]
            assert previous[0] is Priority.INFO
            assert sink.of_kind(Message.LOADED_BEFORE) == []
            assert module_view(daemon, "kmodd_serial")["loaded_by"] == "previous-instance"
        assert binding.probes == []

    asyncio.run(scenario())


def test_a_device_whose_driver_declines_it_is_reprobed_once_and_never_again_after_a_resync(
        root: Root) -> None:
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES, declines=[SERIAL])

    async def scenario() -> None:
        await killed_while_inserting_serial(root, fake, binding)
        sink = ListSink()
        async with running(root, fake, binding, sink=sink) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
            await wait_until(lambda: daemon.devices is not None
                             and daemon.devices.table.devices[SERIAL].reprobe is not None)
            assert daemon.devices is not None and daemon.intake is not None
            reprobe = daemon.devices.table.devices[SERIAL].reprobe
            assert reprobe is not None and reprobe.result.value == "still-unbound"
            (failed,) = sink.of_kind(Message.REPROBE_FAILED)
            assert failed[0] is Priority.WARNING
            assert failed[1].endswith("; no driver took it")
            # A resync hands the device over again: it is not probed a second time.
            resyncs = daemon.intake.statistics().resyncs
            daemon.intake.request_resync("a test")
            await wait_until(lambda: daemon.intake is not None
                             and daemon.intake.statistics().resyncs > resyncs)
            await asyncio.sleep(0.2)
        assert binding.probes == [SERIAL]

    asyncio.run(scenario())


def test_a_device_unbound_while_kmodd_watched_is_left_alone_by_the_next_instance(
        root: Root) -> None:
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)
    source = FakeUeventSource()

    async def scenario() -> None:
        async with running(root, fake, binding, source=source) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
            binding.bind(SERIAL)
            binding.unbind(SERIAL)  # the admin: echo serial8250 > .../unbind
            source.push(Uevent(Action.UNBIND, SERIAL, "platform", 7, {
                "ACTION": "unbind", "DEVPATH": SERIAL, "SUBSYSTEM": "platform",
                "SEQNUM": "7"}))
            await wait_until(lambda: (Kind.UNBOUND.value, (SERIAL,)) in records_in(root),
                             what="the unbind in the record")
        async with running(root, fake, binding) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
            await asyncio.sleep(0.2)
        assert binding.probes == []
        assert binding.driver(SERIAL) is None

    asyncio.run(scenario())


def test_each_step_is_journaled_when_it_ends_not_when_the_chain_does(root: Root) -> None:
    fake = kernel(root)
    gated = GatedSyscalls(fake)
    gated.hold("kmodd_virtio_pci")
    binding = SimulatedBinding(root, fake, DRIVES)

    async def scenario() -> None:
        run = running(root, fake, binding, gated=gated)
        sink = run.sink
        assert isinstance(sink, ListSink)
        async with run:
            await wait_until(lambda: gated.started.get("kmodd_virtio_pci") == 1)
            # kmodd_core, before kmodd_virtio_pci in the same chain, is told already.
            await wait_until(lambda: any(r.module == "kmodd_core" and r.outcome == "inserted"
                                         for r in sink.records),
                             what="kmodd_core's record while the chain still runs")
            assert not any(r.module == "kmodd_virtio_pci" for r in sink.records
                           if r.outcome == "inserted")
            gated.open()
            await wait_until(lambda: any(r.module == "kmodd_virtio_pci"
                                         and r.outcome == "inserted" for r in sink.records))
        told = [r.module for r in sink.records if r.outcome == "inserted"]
        assert len(told) == len(set(told))  # each once

    asyncio.run(scenario())


def test_a_module_that_goes_live_without_kmodd_is_recorded_as_such(root: Root) -> None:
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)
    source = FakeUeventSource()

    async def scenario() -> None:
        sink = ListSink()
        async with running(root, fake, binding, source=source, sink=sink,
                           coldplug=False) as daemon:
            source.push(Uevent(Action.ADD, "/module/kmodd_pcspkr", "module", 9, {
                "ACTION": "add", "DEVPATH": "/module/kmodd_pcspkr", "SUBSYSTEM": "module",
                "SEQNUM": "9"}))
            await wait_until(lambda: bool(sink.of_kind(Message.LOADED_ELSEWHERE)))
            assert sink.of_kind(Message.LOADED_ELSEWHERE) == [(
                Priority.INFO, "Module kmodd_pcspkr went live, loaded not by kmodd but by the "
                "kernel's own request or another program")]
            assert module_view(daemon, "kmodd_pcspkr") == {"loaded_by": "not-kmodd",
                                                          "loaded_by_pid": None}

    asyncio.run(scenario())


def test_a_record_that_cannot_be_kept_is_reported_and_loading_goes_on(root: Root) -> None:
    fake = kernel(root)
    binding = SimulatedBinding(root, fake, DRIVES)
    os.makedirs(root.path(RECORD_FILE + ".new/occupied"))  # the temporary name is taken

    async def scenario() -> None:
        sink = ListSink()
        async with running(root, fake, binding, sink=sink) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
            status = (daemon.control or daemon.start_control()).status()
            assert status.records_failure == (
                f"cannot create {root.path(RECORD_FILE)}.new: Is a directory")
            assert sink.of_kind(Message.RECORDS_FAILED) == [
                (Priority.WARNING, status.records_failure)]
        assert fake.module("kmodd_serial") is not None

    asyncio.run(scenario())
