"""The daemon loading modules-load.d, `modules_load=` and /etc/modules at start (`modules_load =
yes`), on a fixture index and the simulated kernel: the same decide/loader/teller path as a
device's modules, with the file and line that name each module in its records and in `why`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kmodd.core.runpaths import TAKEOVER_FLAG
from kmodd.daemon.records import ModuleRecord
from kmodd.daemon.service import Daemon
from kmodd.system.journal import Priority
from kmodd.system.root import Root
from tests.daemon.daemon_tree import (
    MACHINE_MODULES,
    FixtureModule,
    ListSink,
    RunningDaemon,
    fake_kernel,
    kmodctl,
    wait_until,
    write_tree,
)
from tests.fakes import GatedSyscalls

CMDLINE = ("BOOT_IMAGE=/boot/vmlinuz root=/dev/vda ro modules-load=kmodd_serial "
           "rd.modules_load=kmodd_virtio_blk")


def write_lists(base: Path) -> None:
    etc = base / "etc/modules-load.d"
    usr = base / "usr/lib/modules-load.d"
    etc.mkdir(parents=True, exist_ok=True)
    usr.mkdir(parents=True, exist_ok=True)
    (etc / "10-net.conf").write_text("# the network, before udev finds it\nkmodd-virtio-net\n")
    (etc / "20-speaker.conf").write_text("\n; beep\nkmodd_pcspkr\n")
    (usr / "30-vendor.conf").write_text("kmodd_virtio_blk\n")
    (etc / "30-vendor.conf").symlink_to("/dev/null")  # masks the vendor's list
    (usr / "40-missing.conf").write_text("kmodd_no_such_module\n")
    (base / "etc/modules").write_text("# /etc/modules\nkmodd_host_bridge\n")
    (etc / "modules.conf").symlink_to("../modules")  # Debian's kmod package


def live(kernel: GatedSyscalls) -> set[str]:
    return {m.name for m in kernel.kernel.loaded}


def listed_records(sink: ListSink) -> dict[str, tuple[str, Priority, str | None, str]]:
    """module (or looked-up name) -> (outcome, priority, KMODD_LISTED_IN, MESSAGE)."""
    return {r.module or r.message: (r.outcome, r.priority, r.listed, r.message)
            for r in sink.records if r.listed is not None and r.outcome != "already-loaded"}


def test_the_lists_load_at_start_through_the_device_path_with_their_file_and_line(
        tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", MACHINE_MODULES)
    write_lists(tmp_path / "root")
    gated = GatedSyscalls(fake_kernel(root, cmdline=CMDLINE,
                                      module_blacklist=["kmodd_host_bridge"]))
    sink = ListSink()
    why: list[str] = []

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, sink=sink, modules_load=True) as daemon:
            assert os.path.exists(root.path(TAKEOVER_FLAG))
            await wait_until(lambda: "kmodd_no_such_module" in daemon_modules(daemon)
                             and "kmodd_host_bridge" in daemon_modules(daemon)
                             and {"kmodd_virtio_net", "kmodd_serial"} <= live(gated),
                             what="the listed modules")
            await wait_until(lambda: daemon.loader is not None and not daemon.loader.loading())
            for name in ("kmodd_virtio_net", "kmodd_pcspkr", "kmodd_serial"):
                code, out, _ = await asyncio.to_thread(kmodctl, daemon_socket(root), "why",
                                                       name)
                assert code == 0
                why.append(out)
            code, out, _ = await asyncio.to_thread(kmodctl, daemon_socket(root), "explain",
                                                   "kmodd_pcspkr")
            why.append(out)

    asyncio.run(scenario())
    # The command line first (modules-load= with a dash too), then the files by name; the
    # masked vendor list and rd.modules_load= load nothing; the deny-listed are not loaded.
    assert live(gated) == {"kmodd_serial", "kmodd_core", "kmodd_virtio_pci",
                           "kmodd_net_failover", "kmodd_virtio_net"}
    records = listed_records(sink)
    assert records["kmodd_virtio_net"][:3] == (
        "inserted", Priority.INFO, "/etc/modules-load.d/10-net.conf:2")
    # A dependency of two listed modules (kmodd_virtio_net's and kmodd_host_bridge's): the
    # lists load side by side, and the chain that gets to it first inserts it for its line.
    assert records["kmodd_core"][:2] == ("inserted", Priority.INFO)
    assert records["kmodd_core"][2] in ("/etc/modules-load.d/10-net.conf:2", "/etc/modules:2")
    assert records["kmodd_serial"][:3] == (
        "inserted", Priority.INFO, "the kernel command line (modules_load=)")
    # Deny-listed in modprobe.d: skipped, at notice, naming the line that denies it.
    assert records["kmodd_pcspkr"] == (
        "blacklisted", Priority.NOTICE, "/etc/modules-load.d/20-speaker.conf:3",
        "Module 'kmodd_pcspkr' is deny-listed (by kmod); skipped: blacklisted by "
        "/etc/modprobe.d/kmodd-test.conf:1 [listed in /etc/modules-load.d/20-speaker.conf:3]")
    # On the kernel's module_blacklist=: refused by the kernel, at notice.
    assert records["kmodd_host_bridge"] == (
        "blacklisted", Priority.NOTICE, "/etc/modules:2",
        "Module 'kmodd_host_bridge' is deny-listed (by kernel); refused by the kernel: "
        "module_blacklist= on its command line; kernel: Module kmodd_host_bridge is "
        "blacklisted [listed in /etc/modules:2]")
    # A module that cannot be loaded: a warning.
    missing = next(r for r in sink.records if r.outcome == "not-found")
    assert (missing.priority, missing.listed, missing.message) == (
        Priority.WARNING, "/usr/lib/modules-load.d/40-missing.conf:1",
        "Failed to find module 'kmodd_no_such_module' "
        "[listed in /usr/lib/modules-load.d/40-missing.conf:1]")
    assert "kmodd_virtio_blk" not in {r.module for r in sink.records}
    assert "kmodd_virtio_net is live: loaded by this kmodd; listed in " \
           "/etc/modules-load.d/10-net.conf:2" in why[0]
    assert "kmodd_pcspkr is not live: kmodd's last outcome was blacklisted; listed in " \
           "/etc/modules-load.d/20-speaker.conf:3" in why[1]
    assert "listed in the kernel command line (modules_load=)" in why[2]
    assert "kmodd_pcspkr is listed in /etc/modules-load.d/20-speaker.conf:3" in why[3]


def daemon_modules(daemon: Daemon) -> dict[str, ModuleRecord]:
    assert daemon.devices is not None
    return dict(daemon.devices.table.modules)


def daemon_socket(root: Root) -> str:
    return root.path("/run/kmodd/io.kmodd")


def test_by_default_kmodd_leaves_the_lists_to_systemd_modules_load(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", MACHINE_MODULES)
    write_lists(tmp_path / "root")
    flag = root.path(TAKEOVER_FLAG)
    os.makedirs(os.path.dirname(flag), exist_ok=True)
    Path(flag).touch()  # left by an instance that had modules_load = yes
    gated = GatedSyscalls(fake_kernel(root, cmdline=CMDLINE))
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, sink=sink) as daemon:
            assert not os.path.exists(flag)
            await asyncio.sleep(0.3)
            assert daemon_modules(daemon) == {}

    asyncio.run(scenario())
    assert live(gated) == set()
    assert [r for r in sink.records if r.listed is not None] == []


def test_a_dry_run_does_not_ask_systemd_modules_load_to_stand_aside(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", MACHINE_MODULES)
    write_lists(tmp_path / "root")
    gated = GatedSyscalls(fake_kernel(root, cmdline=CMDLINE))
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, sink=sink, modules_load=True,
                                 dry_run=True) as daemon:
            assert not os.path.exists(root.path(TAKEOVER_FLAG))
            await wait_until(lambda: "kmodd_virtio_net" in daemon_modules(daemon))

    asyncio.run(scenario())
    assert live(gated) == set()
    planned = {r.module for r in sink.records if r.outcome == "planned"}
    assert {"kmodd_serial", "kmodd_virtio_net"} <= planned


def test_arguments_on_an_etc_modules_line_reach_the_kernel_after_modprobe_d_options(
        tmp_path: Path) -> None:
    loop = FixtureModule("kmodd_loop", modinfo=("parm=max_loop:int", "parmtype=max_loop:int",
                                                "parmtype=part_shift:int"))
    root = write_tree(tmp_path / "root", (loop,),
                      config={"etc/modprobe.d/loop.conf": "options kmodd_loop part_shift=2\n"})
    base = tmp_path / "root"
    (base / "etc/modules-load.d").mkdir(parents=True)
    (base / "etc/modules").write_text("kmodd_loop max_loop=8\n")
    (base / "etc/modules-load.d/modules.conf").symlink_to("../modules")
    gated = GatedSyscalls(fake_kernel(root))

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=gated, modules_load=True):
            await wait_until(lambda: "kmodd_loop" in live(gated))

    asyncio.run(scenario())
    module = next(m for m in gated.kernel.loaded if m.name == "kmodd_loop")
    assert module.params == {"max_loop": "8", "part_shift": "2"}


def test_a_listed_built_in_module_is_said_built_in_at_info_and_why_says_so(
        tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", MACHINE_MODULES)
    (tmp_path / "root/usr/lib/modules-load.d").mkdir(parents=True)
    (tmp_path / "root/usr/lib/modules-load.d/rtc.conf").write_text("kmodd-rtc\n")
    sink = ListSink()
    why: list[str] = []

    async def scenario() -> None:
        async with RunningDaemon(root, sink=sink, modules_load=True) as daemon:
            await wait_until(lambda: "kmodd_rtc" in daemon_modules(daemon))
            code, out, _ = await asyncio.to_thread(kmodctl, daemon_socket(root), "why",
                                                   "kmodd_rtc")
            assert code == 0
            why.append(out)

    asyncio.run(scenario())
    assert [(r.outcome, r.priority, r.listed) for r in sink.records] == [
        ("builtin", Priority.INFO, "/usr/lib/modules-load.d/rtc.conf:1")]
    assert "kmodd_rtc is built into the kernel; listed in /usr/lib/modules-load.d/rtc.conf:1" \
        in why[0]


def test_the_lists_load_once_per_boot_a_restarted_kmodd_only_remembers_them(
        tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", MACHINE_MODULES)
    (tmp_path / "root/etc/modules-load.d").mkdir(parents=True)
    (tmp_path / "root/etc/modules-load.d/x.conf").write_text("kmodd_net_failover\nkmodd_serial\n")
    kernel = fake_kernel(root)
    sink = ListSink()
    why: list[str] = []

    def live_names() -> set[str]:
        return {m.name for m in kernel.loaded}

    async def first() -> None:
        async with RunningDaemon(root, kernel=kernel, modules_load=True) as daemon:
            await wait_until(lambda: {"kmodd_net_failover", "kmodd_serial"} <= live_names())
            await wait_until(lambda: daemon.loader is not None and not daemon.loader.loading())
            await wait_until(lambda: Path(root.path(TAKEOVER_FLAG)).read_bytes() == b"loaded\n",
                             what="the lists noted as loaded")

    async def second() -> None:
        async with RunningDaemon(root, kernel=kernel, sink=sink, modules_load=True):
            await asyncio.sleep(0.3)
            for name in ("kmodd_net_failover", "kmodd_serial"):
                code, out, _ = await asyncio.to_thread(kmodctl, daemon_socket(root), "why",
                                                       name)
                assert code == 0
                why.append(out)

    asyncio.run(first())
    # The admin removes one; kmodd restarts (an upgrade, say) in the same boot.
    assert kernel.delete_module(b"kmodd_net_failover", 0) == 0
    asyncio.run(second())
    assert live_names() == {"kmodd_serial"}
    assert [r for r in sink.records if r.listed is not None] == []
    assert os.path.exists(root.path(TAKEOVER_FLAG))  # systemd-modules-load still stands aside
    assert "listed in" not in why[0]  # not live now: nothing to attribute
    assert (f"kmodd_serial is live: loaded by the previous kmodd instance (pid {os.getpid()}); "
            "listed in /etc/modules-load.d/x.conf:2") in why[1]
