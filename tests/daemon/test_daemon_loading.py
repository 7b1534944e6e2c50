"""The daemon's loading rules, on a fixture index and the simulated kernel, with uevents from
a fake source: one insert per module however many devices want it, chains in parallel up to
the limit and each in order, failures classified and quoted, udev's static rules, dry run.
"""

from __future__ import annotations

import asyncio
import errno as E
import os
from pathlib import Path

import pytest

from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.core.explain.model import Check, Verdict
from kmodd.daemon.loader import BACKGROUND_NICE
from kmodd.daemon.service import Daemon
from kmodd.system.journal import Priority
from kmodd.system.root import Root
from tests.daemon.daemon_tree import (
    KVER,
    MACHINE_MODULES,
    FixtureModule,
    ListSink,
    RunningDaemon,
    fake_kernel,
    wait_until,
    write_tree,
)
from tests.fakes import FakeUeventSource, GatedSyscalls

VIRTIO_PCI = "pci:v00001AF4d00001045sv00001AF4sd00001045bcFFscFFi00"
HOST_BRIDGE = "pci:v00008086d00000D57sv00000000sd00000000bc06sc00i00"


def uevent(devpath: str, modalias: str | None = None, seqnum: int = 1, *,
           subsystem: str = "pci", action: str = "add", **env: str) -> Uevent:
    variables = {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": subsystem, **env}
    if modalias is not None:
        variables["MODALIAS"] = modalias
    variables["SEQNUM"] = str(seqnum)
    return Uevent(Action(action), devpath, subsystem, seqnum, variables)


def finished(daemon: Daemon, *devpaths: str) -> bool:
    assert daemon.devices is not None
    records = daemon.devices.table.devices
    return all(p in records and records[p].finished is not None for p in devpaths)


def outcome_of(daemon: Daemon, devpath: str) -> str | None:
    assert daemon.devices is not None
    outcome = daemon.devices.table.devices[devpath].outcome
    return outcome.value if outcome is not None else None


@pytest.fixture
def root(tmp_path: Path) -> Root:
    return write_tree(tmp_path / "root", MACHINE_MODULES)


def test_two_chains_sharing_a_dependency_insert_it_once(root: Root) -> None:
    gated = GatedSyscalls(fake_kernel(root))
    gated.hold("kmodd_core")
    source = FakeUeventSource()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, source=source) as daemon:
            assert daemon.loader is not None
            loader = daemon.loader
            # Two devices whose modules differ but both need kmodd_core.
            source.push(uevent("/devices/a", VIRTIO_PCI, 1), uevent("/devices/b", HOST_BRIDGE, 2))
            await wait_until(lambda: loader.statistics().inserts_joined == 1,
                             what="the second chain waiting")
            assert gated.started == {"kmodd_core": 1}
            gated.open()
            await wait_until(lambda: finished(daemon, "/devices/a", "/devices/b"))
            assert outcome_of(daemon, "/devices/a") == "inserted"
            assert outcome_of(daemon, "/devices/b") == "inserted"
            # The timeline (kmodctl plot, critical-chain): each module after the dependency
            # it waited for, kmodd_core's wait that of the chain that inserted it.
            assert daemon.devices is not None
            modules = daemon.devices.table.modules
            assert [(modules[n].after, modules[n].device) for n in (
                "kmodd_virtio_pci", "kmodd_host_bridge")] == [
                ("kmodd_core", "/devices/a"), ("kmodd_core", "/devices/b")]
            core = modules["kmodd_core"]
            assert core.step is not None and not core.step.joined
            assert core.after is None and core.device in ("/devices/a", "/devices/b")

    asyncio.run(scenario())
    assert gated.started == {"kmodd_core": 1, "kmodd_virtio_pci": 1, "kmodd_host_bridge": 1}
    assert [n for c, n in gated.kernel.calls if c == "finit_module"].count("kmodd_core") == 1


def test_a_second_device_wanting_a_module_being_loaded_waits_for_that_load(root: Root) -> None:
    gated = GatedSyscalls(fake_kernel(root))
    gated.hold("kmodd_virtio_pci")
    source = FakeUeventSource()
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, source=source, sink=sink) as daemon:
            assert daemon.loader is not None
            loader = daemon.loader
            source.push(uevent("/devices/a", VIRTIO_PCI, 1))
            await wait_until(lambda: gated.started.get("kmodd_virtio_pci") == 1)
            source.push(uevent("/devices/b", VIRTIO_PCI, 2))
            await wait_until(lambda: loader.statistics().chains_joined == 1,
                             what="the joined chain")
            gated.open()
            await wait_until(lambda: finished(daemon, "/devices/a", "/devices/b"))
            assert outcome_of(daemon, "/devices/a") == "inserted"
            assert outcome_of(daemon, "/devices/b") == "already-loaded"

    asyncio.run(scenario())
    assert gated.started == {"kmodd_core": 1, "kmodd_virtio_pci": 1}
    inserted = [r for r in sink.records if r.outcome == "inserted"]
    assert [(r.module, r.devpath, r.priority) for r in inserted] == [
        ("kmodd_core", "/devices/a", Priority.INFO),
        ("kmodd_virtio_pci", "/devices/a", Priority.INFO),
    ]


PARALLEL = tuple(FixtureModule(f"kmodd_par_{c}", aliases=(f"kmoddtest:{c}",)) for c in "abcde")


def test_independent_chains_run_in_parallel_up_to_the_limit(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", PARALLEL, config={})
    gated = GatedSyscalls(fake_kernel(root))
    gated.hold(*(m.name for m in PARALLEL))
    source = FakeUeventSource()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, source=source, parallel_loads=2) as daemon:
            source.push(*(uevent(f"/devices/par/{c}", f"kmoddtest:{c}", i, subsystem="kmodd")
                          for i, c in enumerate("abcde", 1)))
            assert await asyncio.to_thread(gated.wait_active, 2)
            await asyncio.sleep(0.3)  # room for a third chain to start, were it allowed
            assert (gated.active, len(gated.started)) == (2, 2)
            gated.open()
            await wait_until(lambda: finished(daemon, *(f"/devices/par/{c}" for c in "abcde")))

    asyncio.run(scenario())
    assert gated.most == 2
    assert sorted(gated.started) == sorted(m.name for m in PARALLEL)


def test_a_chain_runs_in_order_and_stops_at_a_failed_dependency(root: Root) -> None:
    kernel = fake_kernel(root, init_errors={"kmodd_core": E.ENOMEM})
    source = FakeUeventSource()
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=kernel, source=source, sink=sink) as daemon:
            source.push(uevent("/devices/a", VIRTIO_PCI))
            await wait_until(lambda: finished(daemon, "/devices/a"))
            assert outcome_of(daemon, "/devices/a") == "failed"

    asyncio.run(scenario())
    assert [n for c, n in kernel.calls if c == "finit_module"] == ["kmodd_core"]
    failed = [(r.module, r.errno, r.diagnosis) for r in sink.records if r.outcome == "failed"]
    assert failed == [("kmodd_core", E.ENOMEM, "no-memory"),
                      ("kmodd_virtio_pci", E.ENOMEM, "no-memory")]


BAD = (FixtureModule("kmodd_bad_magic", aliases=("kmoddtest:bad",),
                     modinfo=("vermagic=4.19.0 SMP mod_unload ",)),
       FixtureModule("kmodd_no_device", aliases=("kmoddtest:nodev",)))


def test_a_real_failure_is_a_warning_with_its_cause_and_the_kernels_words(
        tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", BAD, config={})
    kernel = fake_kernel(root, init_errors={"kmodd_no_device": E.ENODEV})
    source = FakeUeventSource()
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=kernel, source=source, sink=sink) as daemon:
            source.push(uevent("/devices/bad", "kmoddtest:bad", 7, subsystem="kmodd"),
                        uevent("/devices/nodev", "kmoddtest:nodev", 8, subsystem="kmodd"))
            await wait_until(lambda: finished(daemon, "/devices/bad", "/devices/nodev"))
            view = await daemon.start_control().explain("kmodd_bad_magic", kernel_log=True)
            attempt, *_ = view.explanation.findings
            assert (attempt.check, attempt.verdict, attempt.summary) == (
                Check.ATTEMPT, Verdict.PROBLEM, "the load failed with ENOEXEC: bad-format")
            assert [(e.label, e.text) for e in attempt.evidence][2:] == [
                ("failed at", "finit_module"),
                ("kernel log", "kmodd_bad_magic: version magic '4.19.0 SMP mod_unload ' should "
                               "be '6.1.0-56-amd64 SMP preempt mod_unload modversions '")]
            vermagic = [f for f in view.explanation.findings if f.check is Check.VERMAGIC]
            assert [f.verdict for f in vermagic] == [Verdict.PROBLEM]
            (seen,) = view.seen
            assert seen.startswith("kmodd's last outcome for kmodd_bad_magic: failed (ENOEXEC) "
                                   "for /devices/bad, ")

    asyncio.run(scenario())
    (bad,) = [r for r in sink.records if r.module == "kmodd_bad_magic"]
    assert (bad.priority, bad.outcome, bad.errno, bad.diagnosis, bad.seqnum) == \
        (Priority.WARNING, "failed", E.ENOEXEC, "bad-format", 7)
    assert bad.message.startswith("Failed to insert module 'kmodd_bad_magic': Exec format "
                                  "error (bad-format: the kernel refused the file")
    assert "; kernel: kmodd_bad_magic: version magic '4.19.0 SMP mod_unload ' should be " \
        in bad.message
    (nodev,) = [r for r in sink.records if r.module == "kmodd_no_device"]
    # A driver that found no device is no fault of the module: info, as systemd's notice.
    assert (nodev.priority, nodev.errno, nodev.diagnosis) == (Priority.INFO, E.ENODEV,
                                                              "no-device")


DECLINING = (FixtureModule("kmodd_cpufreq", aliases=("kmoddtest:cpu",)),)


def test_a_module_whose_init_refuses_with_eexist_is_declined_not_already_loaded(
        tmp_path: Path) -> None:
    """A cpufreq driver's init returns EEXIST when another cpufreq driver is in charge; the
    kernel then unloads it. libkmod and udev count EEXIST as loaded; kmodd says what happened."""
    root = write_tree(tmp_path / "root", DECLINING, config={})
    kernel = fake_kernel(root, init_errors={"kmodd_cpufreq": E.EEXIST})
    source = FakeUeventSource()
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=kernel, source=source, sink=sink) as daemon:
            source.push(uevent("/devices/cpu0", "kmoddtest:cpu", 3, subsystem="kmodd"))
            await wait_until(lambda: finished(daemon, "/devices/cpu0"))
            assert outcome_of(daemon, "/devices/cpu0") == "failed"
            view = await daemon.start_control().explain("kmodd_cpufreq", kernel_log=True)
            attempt, *_ = view.explanation.findings
            assert (attempt.check, attempt.verdict, attempt.summary) == (
                Check.ATTEMPT, Verdict.PROBLEM, "the load failed with EEXIST: declined")
            assert attempt.fix is not None and attempt.fix.startswith(
                "nothing, unless this module should be the one in charge")

    asyncio.run(scenario())
    assert kernel.module("kmodd_cpufreq") is None
    (record,) = [r for r in sink.records if r.module == "kmodd_cpufreq"]
    assert (record.priority, record.outcome, record.errno, record.diagnosis) == (
        Priority.INFO, "failed", E.EEXIST, "declined")
    assert record.message.startswith(
        "Failed to insert module 'kmodd_cpufreq': File exists (declined: the module's init "
        "function answered 'File exists' and the kernel unloaded it")


def test_a_module_another_program_loaded_during_our_insert_is_already_loaded(
        tmp_path: Path) -> None:
    """The kernel's EEXIST for a module that is there (another program's insert won the race
    after the daemon found the module absent) is no failure."""
    root = write_tree(tmp_path / "root", DECLINING, config={})
    gated = GatedSyscalls(fake_kernel(root))
    gated.hold("kmodd_cpufreq")
    source = FakeUeventSource()
    sink = ListSink()
    path = root.path(f"/lib/modules/{KVER}/kernel/drivers/kmodd/kmodd-cpufreq.ko")

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, source=source, sink=sink) as daemon:
            source.push(uevent("/devices/cpu0", "kmoddtest:cpu", 3, subsystem="kmodd"))
            await wait_until(lambda: gated.started.get("kmodd_cpufreq") == 1)
            assert gated.kernel.port().insert(path).errno == 0  # the other program
            gated.open()
            await wait_until(lambda: finished(daemon, "/devices/cpu0"))
            assert outcome_of(daemon, "/devices/cpu0") == "already-loaded"

    asyncio.run(scenario())
    (record,) = [r for r in sink.records if r.module == "kmodd_cpufreq"]
    assert (record.outcome, record.errno, record.diagnosis) == ("already-loaded", E.EEXIST, None)


STATIC = (FixtureModule("sg"), FixtureModule("ppdev"))


def test_the_static_udev_rules_load_sg_and_ppdev(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", STATIC, config={})
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            source.push(uevent("/devices/scsi/0:0:0:0", "scsi:t-0x00", 1, subsystem="scsi",
                               DEVTYPE="scsi_device"),
                        uevent("/module/parport_pc", None, 2, subsystem="module"))
            await wait_until(lambda: finished(daemon, "/devices/scsi/0:0:0:0",
                                              "/module/parport_pc"))
            assert {m.name for m in running.fake.loaded} == {"sg", "ppdev"}
            assert daemon.devices is not None
            assert daemon.devices.table.devices["/devices/scsi/0:0:0:0"].candidates == ("sg",)

    asyncio.run(scenario())


SCSI_DISK = (*STATIC, FixtureModule("sd_mod", aliases=("scsi:t-0x00*",)))


def scsi_disk_added(seqnum: int = 1) -> Uevent:
    return uevent("/devices/scsi/0:0:0:0", "scsi:t-0x00", seqnum, subsystem="scsi",
                  DEVTYPE="scsi_device")


def test_what_only_the_static_rules_ask_for_loads_at_a_lower_cpu_priority(
        tmp_path: Path) -> None:
    """A SCSI disk's own driver (its MODALIAS) keeps the daemon's priority; sg, which udev's
    rules add for every SCSI device, is inserted from a thread niced BACKGROUND_NICE more."""
    root = write_tree(tmp_path / "root", SCSI_DISK, config={})
    source = FakeUeventSource()
    own = os.getpriority(os.PRIO_PROCESS, 0)

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            source.push(scsi_disk_added())
            await wait_until(lambda: finished(daemon, "/devices/scsi/0:0:0:0"))
            assert running.syscalls.nice == {"sd_mod": own,
                                             "sg": min(own + BACKGROUND_NICE, 19)}

    asyncio.run(scenario())


def test_sg_waits_until_the_disk_driver_is_live_then_loads_beside_its_probe(
        tmp_path: Path) -> None:
    """The kernel sends add@/module/sd_mod once sd_mod is live, while its insert still waits
    for the disk's probe: sg starts then, not beside sd_mod's chain and not after it."""
    root = write_tree(tmp_path / "root", SCSI_DISK, config={})
    gated = GatedSyscalls(fake_kernel(root))
    gated.hold("sd_mod")
    source = FakeUeventSource()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, source=source) as daemon:
            source.push(scsi_disk_added())
            await wait_until(lambda: gated.started == {"sd_mod": 1}, what="sd_mod's insert")
            await asyncio.sleep(0.2)
            assert gated.started == {"sd_mod": 1}  # sg is held back
            source.push(uevent("/module/sd_mod", None, 2, subsystem="module"))
            await wait_until(lambda: "sg" in gated.started, what="sg's insert")
            assert gated.most == 2  # sg was inside finit_module with sd_mod still in it
            gated.open()
            await wait_until(lambda: finished(daemon, "/devices/scsi/0:0:0:0"))
            assert outcome_of(daemon, "/devices/scsi/0:0:0:0") == "inserted"

    asyncio.run(scenario())


def test_sg_still_loads_when_the_disk_driver_fails_and_never_goes_live(tmp_path: Path) -> None:
    modules = (*STATIC, FixtureModule("sd_mod", aliases=("scsi:t-0x00*",),
                                      needs=("no_such_symbol",)))
    root = write_tree(tmp_path / "root", modules, config={})
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            source.push(scsi_disk_added())
            await wait_until(lambda: finished(daemon, "/devices/scsi/0:0:0:0"))
            assert {m.name for m in running.fake.loaded} == {"sg"}
            assert list(running.syscalls.started) == ["sd_mod", "sg"]

    asyncio.run(scenario())


def test_a_dry_run_decides_and_tells_but_inserts_nothing(root: Root) -> None:
    source = FakeUeventSource()
    sink = ListSink()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source, sink=sink, dry_run=True)
        async with running as daemon:
            source.push(uevent("/devices/a", VIRTIO_PCI))
            await wait_until(lambda: finished(daemon, "/devices/a"))
            assert running.fake.calls == []
            assert outcome_of(daemon, "/devices/a") == "planned"
            assert daemon.start_control().status().dry_run

    asyncio.run(scenario())
    assert [(r.module, r.outcome) for r in sink.records] == [
        ("kmodd_core", "planned"), ("kmodd_virtio_pci", "planned")]


def test_events_for_a_waiting_device_are_coalesced_and_a_full_queue_means_a_resync(
        root: Root) -> None:
    source = FakeUeventSource()
    sink = ListSink()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source, sink=sink, intake_queue=16,
                                devices_root=Root("/nonexistent"))
        async with running as daemon:
            assert daemon.intake is not None
            events = [uevent("/devices/same", VIRTIO_PCI, n) for n in range(1, 6)]
            events += [uevent(f"/devices/x{n}", "kmoddtest:none", 10 + n) for n in range(40)]
            source.push(*events)
            await wait_until(lambda: daemon.start_control().statistics().resyncs == 1,
                             what="a resync")
            counters = daemon.intake.statistics()
            assert counters.coalesced == 4
            assert counters.overflows == 40 + 1 - 16
            assert daemon.start_control().statistics().overruns == counters.overflows

    asyncio.run(scenario())


def test_with_the_index_left_mapped_lookups_answer_from_the_files(root: Root) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        async with RunningDaemon(root, source=source, index_in_memory=False) as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)
            assert not daemon.snapshots.current.decoded
            source.push(uevent("/devices/a", VIRTIO_PCI))
            await wait_until(lambda: finished(daemon, "/devices/a"))
            assert outcome_of(daemon, "/devices/a") == "inserted"
            assert await daemon.start_control().reload() == 2
            assert not daemon.snapshots.current.decoded

    asyncio.run(scenario())


def test_a_second_device_with_the_same_modalias_reuses_the_plan(root: Root) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source)
        async with running as daemon:
            assert daemon.devices is not None
            devices = daemon.devices
            await asyncio.wait_for(daemon.coldplugged.wait(), 30)  # the decoded index is in
            source.push(uevent("/devices/cpu0", "platform:serial8250", 1, subsystem="cpu"))
            await wait_until(lambda: finished(daemon, "/devices/cpu0"))
            source.push(uevent("/devices/cpu1", "platform:serial8250", 2, subsystem="cpu"))
            await wait_until(lambda: finished(daemon, "/devices/cpu1"))
            assert devices.statistics().decision_hits == 1
            assert outcome_of(daemon, "/devices/cpu0") == "inserted"
            assert outcome_of(daemon, "/devices/cpu1") == "already-loaded"
            # A reload brings a new snapshot: nothing is reused across it.
            await daemon.start_control().reload()
            source.push(uevent("/devices/cpu2", "platform:serial8250", 3, subsystem="cpu"))
            await wait_until(lambda: finished(daemon, "/devices/cpu2"))
            assert devices.statistics().decision_hits == 1
            assert [n for c, n in running.fake.calls if c == "finit_module"] == ["kmodd_serial"]

    asyncio.run(scenario())


def test_a_dry_run_unload_removes_nothing(root: Root) -> None:
    kernel = fake_kernel(root)
    serial = root.path(f"/lib/modules/{KVER}/kernel/drivers/kmodd/kmodd-serial.ko")
    assert kernel.port().insert(serial).ok

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=kernel, source=FakeUeventSource(),
                                 dry_run=True) as daemon:
            results = await daemon.start_control().unload(["kmodd_serial"])
            assert [(r.module, r.outcome, r.message) for r in results] == [
                ("kmodd_serial", "planned", "Would remove kmodd_serial (dry run)")]

    asyncio.run(scenario())
    assert kernel.module("kmodd_serial") is not None
    assert [c for c, _ in kernel.calls] == ["finit_module"]


def test_a_bind_right_behind_a_waiting_add_does_not_cancel_its_loading(root: Root) -> None:
    """Under load the kernel's `bind` (a driver already loaded took the device) can reach
    the queue while the device's `add` still waits there; the add's modules still load."""
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source, devices_root=Root("/nonexistent"))
        async with running as daemon:
            source.push(uevent("/devices/vp", VIRTIO_PCI, 1),
                        uevent("/devices/vp", VIRTIO_PCI, 2, action="bind", DRIVER="other"))
            await wait_until(lambda: finished(daemon, "/devices/vp"))
            assert daemon.devices is not None and daemon.intake is not None
            assert daemon.intake.statistics().coalesced == 1
            assert daemon.devices.table.devices["/devices/vp"].seqnum == 1
            assert {m.name for m in running.fake.loaded} == {"kmodd_core", "kmodd_virtio_pci"}

    asyncio.run(scenario())


def test_a_remove_behind_a_waiting_add_means_nothing_is_loaded_for_the_device(
        root: Root) -> None:
    source = FakeUeventSource()

    async def scenario() -> None:
        running = RunningDaemon(root, source=source, devices_root=Root("/nonexistent"))
        async with running as daemon:
            source.push(uevent("/devices/vp", VIRTIO_PCI, 1),
                        uevent("/devices/vp", VIRTIO_PCI, 2, action="remove"))
            await wait_until(lambda: daemon.devices is not None
                             and daemon.devices.statistics().handled_events == 1)
            assert daemon.devices is not None
            assert "/devices/vp" not in daemon.devices.table.devices
            assert running.fake.loaded == []

    asyncio.run(scenario())
