"""The kernel's own module requests, on the simulated kernel with a fake tracefs (its
trace_pipe a FIFO the test writes the kernel's lines into): a request answered by the
helper's load is recorded with the process that caused it, shown by `why` and `status`, and
told to the journal; a request for a denied alias is refused at notice; the policy file is
written before the daemon's first snapshot."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kmodd.core.autoload.kmsg import KmsgRecord, format_record
from kmodd.core.autoload.ktrace import Task
from kmodd.core.autoload.loadrecords import LoadedBy
from kmodd.core.autoload.messages import Message
from kmodd.daemon import kernelrequests
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
from tests.system.test_tracefs import fake_tracefs

FS = FixtureModule("kmodd_fs", aliases=("fs-kmoddfs",))
REQUEST = ("           mount-812     [000] .....    27.075084: module_request: fs-kmoddfs "
           "wait=1 call_site=get_fs_type\n")
LOAD = "        modprobe-813     [000] .....    27.300000: module_load: kmodd_fs \n"
DENIED = ("         python3-900     [000] .....    28.000000: module_request: net-pf-33 wait=1 "
          "call_site=__sock_create\n")


def test_a_kernel_request_is_recorded_with_its_process_and_a_denied_one_refused(
        tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", (*MACHINE_MODULES, FS))
    instance = fake_tracefs(Path(root.prefix))
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, sink=sink, autoload_deny="net-pf-33") as daemon:
            assert daemon.records is not None
            writer = os.open(instance / "trace_pipe", os.O_WRONLY)
            try:
                os.write(writer, (REQUEST + LOAD + DENIED).encode())
                await wait_until(lambda: len(sink.of_kind(Message.KERNEL_REQUEST_REFUSED)) == 1)
                record = daemon.records.modules["kmodd_fs"]
                assert record.loaded_by is LoadedBy.KERNEL_REQUEST
                assert record.request is not None and record.request.task == Task("mount", 812)
                control = daemon.start_control()
                why = control.why("kmodd_fs")
                assert why is not None
                assert why.summary == ("kmodd_fs is live: requested by the kernel for `mount` "
                                       "(pid 812): fs-kmoddfs")
                assert control.status().kernel_requests == (
                    f"recorded through {instance}: 2 requests, 1 refused; latest: refused "
                    "net-pf-33 for `python3` (pid 900)")
            finally:
                os.close(writer)

    asyncio.run(scenario())
    assert sink.of_kind(Message.KERNEL_REQUEST) == [
        (Priority.INFO,
         "Module kmodd_fs loaded: requested by the kernel for `mount` (pid 812): fs-kmoddfs")]
    assert sink.of_kind(Message.KERNEL_REQUEST_REFUSED) == [
        (Priority.NOTICE, "Refused the kernel's request for net-pf-33 from `python3` (pid 900): "
                          "denied by the autoload policy")]
    policy = Path(root.path("/run/modprobe.d/kmodd-autoload-policy.conf"))
    assert [line for line in policy.read_text().splitlines() if not line.startswith("#")] == [
        "install net-pf-33 /bin/false"]


def test_a_request_repeated_by_a_local_user_is_counted_not_told_each_time(
        tmp_path: Path) -> None:
    """Any user can make the kernel request net-pf-33 in a loop (a socket() of that family):
    the journal gets one record per alias and REPEAT_QUIET, the counters every request."""
    root = write_tree(tmp_path / "root", MACHINE_MODULES)
    instance = fake_tracefs(Path(root.prefix))
    sink = ListSink()
    other = DENIED.replace("net-pf-33", "net-pf-21")

    async def scenario() -> None:
        async with RunningDaemon(root, sink=sink, autoload_deny="net-pf-33") as daemon:
            writer = os.open(instance / "trace_pipe", os.O_WRONLY)
            try:
                os.write(writer, (DENIED * 500 + other * 3).encode())
                control = daemon.start_control()
                await wait_until(lambda: str(control.status().kernel_requests).startswith(
                    f"recorded through {instance}: 503 requests, 500 refused"))
            finally:
                os.close(writer)

    asyncio.run(scenario())
    assert sink.of_kind(Message.KERNEL_REQUEST_REFUSED) == [
        (Priority.NOTICE, "Refused the kernel's request for net-pf-33 from `python3` (pid 900): "
                          "denied by the autoload policy")]
    assert sink.of_kind(Message.KERNEL_REQUEST) == [
        (Priority.INFO, "The kernel's request for net-pf-21 from `python3` (pid 900) loaded no "
                        "module")]


def test_without_tracefs_the_daemon_says_once_that_requests_are_not_recorded(
        tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", MACHINE_MODULES)
    sink = ListSink()

    async def scenario() -> None:
        async with RunningDaemon(root, sink=sink) as daemon:
            assert daemon.start_control().status().kernel_requests == (
                "not recorded: tracefs is not mounted (/sys/kernel/tracing or "
                "/sys/kernel/debug/tracing has no instances directory)")

    asyncio.run(scenario())
    assert sink.of_kind(Message.TRACE_UNAVAILABLE) == [
        (Priority.NOTICE, "The kernel's own module requests are not recorded: tracefs is not "
                          "mounted (/sys/kernel/tracing or /sys/kernel/debug/tracing has no "
                          "instances directory); a module the kernel loads is known only as "
                          "loaded without kmodd")]
    assert not os.path.exists(root.path("/run/modprobe.d/kmodd-autoload-policy.conf"))


BOOT_TRACE = """\
# tracer: nop
#
        modprobe-80      [000] .....     1.000000: module_load: kmodd_core 
         systemd-1       [000] .....     9.081026: module_load: kmodd_serial 
           mount-129     [000] .....    15.090636: module_request: fs-kmoddfs wait=1 call_site=get_fs_type
        modprobe-132     [000] .....    15.327466: module_load: kmodd_fs 
"""  # noqa: E501, W291 - the kernel's lines as they are, a module_load's with its space


def test_modules_live_before_kmodd_are_attributed_from_the_boots_trace(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", (*MACHINE_MODULES, FS))
    fake_tracefs(Path(root.prefix))
    Path(root.path("/sys/kernel/tracing/trace")).write_text(BOOT_TRACE)
    kernel = fake_kernel(root)
    with open(root.path("/dev/kmsg"), "ab") as f:
        for seq, (usec, text) in enumerate(((500_000, "Run /init as init process"),
                                            (5_000_000, "systemd[1]: systemd 252.39-1~deb12u1 "
                                                        "running in system mode (+PAM)"))):
            f.write(format_record(KmsgRecord(seq, Priority.INFO, 0, usec, "-", text)))
    moddir = root.path(f"/lib/modules/{KVER}/kernel/drivers/kmodd")
    for name in ("kmodd-core", "kmodd-serial", "kmodd-fs", "kmodd-pcspkr"):
        assert kernel.port().insert(f"{moddir}/{name}.ko").errno == 0
    sink = ListSink()
    answers: dict[str, str] = {}

    async def scenario() -> None:
        async with RunningDaemon(root, kernel=kernel, sink=sink) as daemon:
            control = daemon.start_control()
            for name in ("kmodd_core", "kmodd_serial", "kmodd_fs", "kmodd_pcspkr"):
                why = control.why(name)
                assert why is not None
                answers[name] = why.summary

    asyncio.run(scenario())
    assert answers == {
        "kmodd_core": "kmodd_core is live: loaded in the initramfs by `modprobe` (pid 80)",
        "kmodd_serial": "kmodd_serial is live: live before kmodd started: loaded by `systemd` "
                        "(pid 1)",
        "kmodd_fs": "kmodd_fs is live: requested by the kernel for `mount` (pid 129): "
                    "fs-kmoddfs, before kmodd started",
        "kmodd_pcspkr": "kmodd_pcspkr is live: live before kmodd started (the initramfs, the "
                        "kernel's own request or another program)",
    }
    assert (Priority.INFO, "The boot's trace tells who loaded 3 of the modules live before "
                           "kmodd started (the initramfs ended by 5.000 s)") in sink.messages


def test_the_next_record_after_the_quiet_time_says_how_many_came_between(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the module reads time.monotonic
    unused: Any = None  # only the repeat bookkeeping is exercised
    watch = kernelrequests.KernelRequestWatch(
        Root(str(tmp_path)), unused, unused, unused, lambda alias: frozenset(), (),
        lambda name: False)
    assert watch._repeats("net-pf-33") == ""
    clock[0] += 1
    assert [watch._repeats("net-pf-33") for _ in range(3)] == [None, None, None]
    assert watch._repeats("net-pf-21") == ""
    clock[0] += kernelrequests.REPEAT_QUIET
    assert watch._repeats("net-pf-33") == " (3 more such requests in the 61 s before this one)"
    assert watch._repeats("net-pf-21") == ""  # told at 1001: its quiet time is over too
