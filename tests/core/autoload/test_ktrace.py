"""The kernel's module tracepoints as tracefs prints them, and the pairing of its requests
with the loads that answer them. The lines are from a real boot of the Debian 6.1 kernel in
the QEMU test bed (tests/data/ktrace/boot-systemd-6.1.trace: systemd as PID 1, kernel
command line `trace_event=module:module_load,module:module_request`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmodd.core.autoload.ktrace import (
    Answered,
    KernelRequests,
    Lost,
    ModuleLoad,
    ModuleRequest,
    SwitchRoot,
    Task,
    TraceDrop,
    TraceDropReason,
    boot_loads,
    parse_deny_list,
    parse_line,
    policy_text,
    switch_root_time,
)

BOOT = Path(__file__).parents[2] / "data/ktrace/boot-systemd-6.1.trace"

MOUNT_REQUEST = ("           mount-129     [000] .....    15.090636: module_request: "
                 "fs-binfmt_misc wait=1 call_site=get_fs_type")
HELPER_LOAD = "        modprobe-132     [000] .....    15.327466: module_load: binfmt_misc "
SOCKET_REQUEST = ("         python3-269     [000] .....    26.744337: module_request: "
                  "net-pf-21 wait=1 call_site=__sock_create")


def test_a_request_names_the_task_the_alias_and_the_call_site() -> None:
    assert parse_line(MOUNT_REQUEST) == ModuleRequest(
        Task("mount", 129), 15.090636, "fs-binfmt_misc", True, "get_fs_type")


def test_a_load_of_an_untainted_module_ends_with_a_space_and_has_no_taints() -> None:
    assert parse_line(HELPER_LOAD) == ModuleLoad(Task("modprobe", 132), 15.327466,
                                                 "binfmt_misc", "")


def test_a_load_of_a_tainted_module_keeps_its_taint_letters() -> None:
    line = "           insmod-900     [001] d..1.   100.000001: module_load: mydrv OE"
    assert parse_line(line) == ModuleLoad(Task("insmod", 900), 100.000001, "mydrv", "OE")


def test_an_alias_with_parentheses_is_kept_whole() -> None:
    line = ("  cryptomgr_test-176     [000] .....    20.004560: module_request: "
            "crypto-cryptd(__ghash-pclmulqdqni) wait=1 call_site=crypto_alg_mod_lookup")
    event = parse_line(line)
    assert isinstance(event, ModuleRequest)
    assert (event.task, event.alias) == (Task("cryptomgr_test", 176),
                                         "crypto-cryptd(__ghash-pclmulqdqni)")


def test_a_command_with_dashes_and_spaces_keeps_them_the_pid_is_the_last_number() -> None:
    line = ("  (udev-worker)-4-77     [003] .....    1.500000: module_request: "
            "char-major-10-200 wait=0 call_site=chrdev_open")
    assert parse_line(line) == ModuleRequest(Task("(udev-worker)-4", 77), 1.5,
                                             "char-major-10-200", False, "chrdev_open")


def test_a_lost_command_is_none_and_the_pid_remains() -> None:
    line = "           <...>-812     [000] .....    30.000000: module_request: fs-cramfs wait=1 " \
           "call_site=get_fs_type"
    event = parse_line(line)
    assert isinstance(event, ModuleRequest)
    assert event.task == Task(None, 812)
    assert event.task.words == "pid 812"


def test_record_tgid_and_no_irq_info_columns_are_read() -> None:
    line = "           mount-129     (    129) [000]    15.090636: module_request: fs-x wait=1 " \
           "call_site=get_fs_type"
    assert parse_line(line) == ModuleRequest(Task("mount", 129), 15.090636, "fs-x", True,
                                             "get_fs_type")


def test_lost_events_are_counted() -> None:
    assert parse_line("CPU:1 [LOST 37 EVENTS]\n") == Lost(37)


@pytest.mark.parametrize(("line", "reason"), [
    ("", TraceDropReason.EMPTY),
    ("# tracer: nop", TraceDropReason.NOT_AN_EVENT),
    ("garbage without a head", TraceDropReason.NOT_AN_EVENT),
    ("           bash-1     [000] .....     1.000000: sched_switch: prev=a",
     TraceDropReason.OTHER_EVENT),
    ("           bash-1     [000] .....     1.000000: module_request: fs-x wait=7 call_site=f",
     TraceDropReason.BAD_REQUEST),
    ("           bash-1     [000] .....     1.000000: module_load: two words here",
     TraceDropReason.BAD_LOAD),
    ("x" * 2000, TraceDropReason.TOO_LONG),
])
def test_a_line_that_is_not_an_event_is_a_drop_with_its_reason(
        line: str, reason: TraceDropReason) -> None:
    drop = parse_line(line)
    assert isinstance(drop, TraceDrop)
    assert drop.reason is reason


def test_every_line_of_a_real_boot_parses() -> None:
    events = [parse_line(line) for line in BOOT.read_text().splitlines()]
    assert [e for e in events if isinstance(e, TraceDrop)] == []
    requests = [e for e in events if isinstance(e, ModuleRequest)]
    loads = [e for e in events if isinstance(e, ModuleLoad)]
    assert (len(requests), len(loads)) == (30, 52)
    assert requests[-2:] == [
        ModuleRequest(Task("python3", 269), 26.744337, "net-pf-21", True, "__sock_create"),
        ModuleRequest(Task("mount", 273), 27.075084, "fs-cramfs", True, "get_fs_type")]


def _resolve(alias: str) -> frozenset[str]:
    return frozenset({"fs-binfmt_misc": {"binfmt_misc"}, "fs-cramfs": {"cramfs"}}.get(alias, ()))


def test_the_helpers_load_answers_the_waiting_request() -> None:
    requests = KernelRequests(_resolve)
    request = parse_line(MOUNT_REQUEST)
    assert isinstance(request, ModuleRequest)
    assert requests.feed(request) == []
    load = parse_line(HELPER_LOAD)
    assert isinstance(load, ModuleLoad)
    answered = requests.feed(load)
    assert answered == [Answered(request, ("binfmt_misc",))]
    assert answered[0].words == "requested by the kernel for `mount` (pid 129): fs-binfmt_misc"
    assert requests.loaded_for == {"binfmt_misc": request}


def test_a_dependency_loaded_by_the_helper_belongs_to_the_request_too() -> None:
    requests = KernelRequests(_resolve)
    request = ModuleRequest(Task("mount", 5), 1.0, "fs-cramfs", True, "get_fs_type")
    requests.feed(request)
    assert requests.feed(ModuleLoad(Task("modprobe", 6), 1.1, "zlib_inflate", "")) == [
        Answered(request, ("zlib_inflate",))]
    assert requests.waiting == 1
    assert requests.feed(ModuleLoad(Task("modprobe", 6), 1.2, "cramfs", "")) == [
        Answered(request, ("cramfs",))]
    assert requests.waiting == 0


def test_a_load_by_another_task_is_not_the_requests() -> None:
    requests = KernelRequests(_resolve)
    requests.feed(ModuleRequest(Task("mount", 5), 1.0, "fs-cramfs", True, "get_fs_type"))
    assert requests.feed(ModuleLoad(Task("kmodd", 147), 1.1, "serio_raw", "")) == []
    assert requests.loaded_for == {}


def test_a_request_answered_by_a_module_it_does_not_resolve_to_ends_quietly() -> None:
    requests = KernelRequests(lambda alias: frozenset({"rds_tcp"}))
    request = ModuleRequest(Task("python3", 9), 1.0, "net-pf-21", True, "__sock_create")
    requests.feed(request)
    assert requests.feed(ModuleLoad(Task("modprobe", 10), 1.1, "rds", "")) == [
        Answered(request, ("rds",))]
    assert requests.expire(40.0) == []
    assert requests.waiting == 0


def test_a_request_for_an_alias_no_module_has_loads_nothing_at_once() -> None:
    requests = KernelRequests(_resolve)
    request = parse_line(SOCKET_REQUEST)
    assert isinstance(request, ModuleRequest)
    assert requests.feed(request) == [Answered(request, ())]
    assert requests.waiting == 0


def test_a_helper_load_long_after_the_request_is_not_its_dependency() -> None:
    requests = KernelRequests(_resolve)
    requests.feed(ModuleRequest(Task("mount", 5), 1.0, "fs-cramfs", True, "get_fs_type"))
    assert requests.feed(ModuleLoad(Task("modprobe", 60), 7.0, "configfs", "")) == []


def test_a_request_that_loads_nothing_ends_after_the_wait_limit() -> None:
    requests = KernelRequests(_resolve)
    request = ModuleRequest(Task("mount", 5), 1.0, "fs-cramfs", True, "get_fs_type")
    assert requests.feed(request) == []
    later = ModuleLoad(Task("kmodd", 1), request.time + 31.0, "evdev", "")
    assert requests.feed(later) == [Answered(request, ())]
    assert requests.flush() == []


def test_a_denied_alias_is_refused_at_once() -> None:
    requests = KernelRequests(_resolve, denied=("net-pf-21",))
    request = parse_line(SOCKET_REQUEST)
    assert isinstance(request, ModuleRequest)
    assert requests.feed(request) == [Answered(request, (), refused=True)]
    assert requests.flush() == []


def test_the_real_boot_pairs_binfmt_misc_with_mounts_request() -> None:
    requests = KernelRequests(_resolve)
    answered: list[Answered] = []
    for line in BOOT.read_text().splitlines():
        event = parse_line(line)
        assert not isinstance(event, TraceDrop)
        answered += requests.feed(event)
    assert [(a.request.alias, a.modules) for a in answered if a.modules] == [
        ("fs-binfmt_misc", ("binfmt_misc",))]
    assert requests.loaded_for["binfmt_misc"].task == Task("mount", 129)


def test_the_deny_list_takes_spaces_and_commas_once_each() -> None:
    assert parse_deny_list(" net-pf-33, fs-cramfs  net-pf-33\tcrypto-hmac(sha1) ") == (
        ("net-pf-33", "fs-cramfs", "crypto-hmac(sha1)"), [])


def test_a_word_that_is_not_an_alias_is_reported() -> None:
    assert parse_deny_list("fs-cramfs net-pf-* a/b") == (
        ("fs-cramfs",), ["'net-pf-*' is not a module alias", "'a/b' is not a module alias"])


def test_the_policy_file_has_one_install_line_per_alias() -> None:
    text = policy_text(("net-pf-33", "fs-cramfs"))
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "install net-pf-33 /bin/false", "install fs-cramfs /bin/false"]


def test_boot_loads_pair_the_kernels_requests_and_name_every_other_loader() -> None:
    loads = boot_loads(BOOT.read_text().splitlines(), _resolve, None)
    assert len(loads) == 48  # four cpufreq/edac modules loaded twice: the latest counts
    binfmt = loads["binfmt_misc"]
    assert (binfmt.task, binfmt.request is not None and binfmt.request.task) == (
        Task("modprobe", 132), Task("mount", 129))
    assert (loads["autofs4"].task, loads["autofs4"].request) == (Task("systemd", 1), None)
    assert loads["configfs"].request is None  # systemd's modprobe@configfs, long after
    assert not any(load.initramfs for load in loads.values())


def test_loads_before_an_initrds_switching_root_are_the_initramfs() -> None:
    loads = boot_loads(BOOT.read_text().splitlines(), _resolve, SwitchRoot(11.0, True))
    assert (loads["qemu_fw_cfg"].initramfs, loads["configfs"].initramfs) == (True, False)


def test_the_real_roots_systemd_is_never_the_initramfs() -> None:
    """Without an initrd's word, the switch is at the real root's systemd's first sign: its
    kmod-setup loads (autofs4 at 9.08 s) come before its first log line (here 11 s)."""
    loads = boot_loads(BOOT.read_text().splitlines(), _resolve, SwitchRoot(11.0, False))
    assert not any(load.initramfs for load in loads.values())


def test_the_switch_root_is_systemds_in_an_initrd() -> None:
    log = [(0.5, "Run /init as init process"), (2.0, "systemd[1]: systemd 252 running in "
           "system mode (+PAM)"), (4.5, "systemd[1]: Switching root."),
           (5.0, "systemd[1]: systemd 252 running in system mode (+PAM)")]
    assert switch_root_time(log) == SwitchRoot(4.5, True)


def test_the_switch_root_after_an_initramfs_without_systemd_is_systemds_first_line() -> None:
    log = [(0.5, "Run /init as init process"), (3.0, "EXT4-fs (vda): mounted"),
           (3.2, "systemd[1]: systemd 252.39-1~deb12u1 running in system mode (+PAM +AUDIT)")]
    assert switch_root_time(log) == SwitchRoot(3.2, False)


def test_without_an_initramfs_there_is_no_switch_root() -> None:
    assert switch_root_time([(1.0, "systemd[1]: systemd 252 running in system mode")]) is None
