"""modprobe that really loads and removes, on the simulated kernel (kmod's testsuite, ported).

kmod's own testsuite checks these with an init_module trap and `modules_loaded`; here the
simulated Linux 6.1 (tests/fakes.py) takes the syscalls and the test reads what it holds.
The output must be kmod 30's; where the real modprobe can reach the same point on this
host (install commands, --first-time, in-use checks), tests/scenarios compares it live.
"""

from __future__ import annotations

import errno as E
import io
import os
import signal
from collections.abc import Mapping
from typing import Any

import pytest

from kmodd.cli.modprobe import run
from kmodd.system.actions import (
    COMMAND_DEPTH_ENV,
    COMMAND_NESTING_MAX,
    COMMAND_TIMEOUT_ENV,
    backoff_delta_msec,
)
from kmodd.system.root import Root
from tests.fakes import DEBIAN_VERMAGIC, KERNEL_SOCKET_ENV, FakeKernel, SyscallServer
from tests.kofixtures import module_tree, standard_modinfo
from tests.nested_modprobe import nested_modprobe_command
from tests.toolrun import Ran, kmodd_tool, real_tool

KVER = "4.4.4"
LOOP = {
    "kernel/mod-loop-a.ko": {"exports": ["printA"], "needs": ["printB"]},
    "kernel/mod-loop-b.ko": {"exports": ["printB"]},
}
SIMPLE: dict[str, dict[str, Any]] = {"kernel/mod-simple.ko": {}}
MODULE_LESS_KERNEL = not os.path.exists("/proc/modules")


def tree(tmp_path, modules: Mapping[str, Mapping[str, object]],
         files: Mapping[str, str] | None = None) -> Root:
    return Root(module_tree(str(tmp_path / "root"), KVER, modules, files))


def modprobe(kernel: FakeKernel, *args: str, environ: Mapping[str, str] | None = None,
             port=None) -> Ran:
    return kmodd_tool(["modprobe", "-S", KVER, *args], root=kernel.root,
                      environ=dict(environ or {}), kernel=port or kernel.port())


def loaded(kernel: FakeKernel) -> set[str]:
    """kmod's testsuite check: the directories in <root>/sys/module (and the kernel agrees)."""
    in_sysfs = {d for d in os.listdir(kernel.root.sys("module")) if d != "module"}
    assert in_sysfs == {m.name for m in kernel.loaded}
    return in_sysfs


# --- kmod's testsuite ------------------------------------------------------------------------

def test_show_depends_prints_the_plan_and_loads_nothing(tmp_path):
    """modprobe_show_depends_no_load."""
    kernel = FakeKernel(tree(tmp_path, {**SIMPLE, **LOOP}))
    ran = modprobe(kernel, "--show-depends", "mod-loop-a")
    assert ran == Ran(0, b"insmod /lib/modules/4.4.4/kernel/mod-loop-b.ko \n"
                         b"insmod /lib/modules/4.4.4/kernel/mod-loop-a.ko \n", b"")
    assert loaded(kernel) == set()
    assert kernel.calls == []


def test_a_dependency_loads_first_then_the_module(tmp_path):
    kernel = FakeKernel(tree(tmp_path, LOOP))
    assert modprobe(kernel, "mod-loop-a") == Ran(0, b"", b"")
    assert [c for c in kernel.calls] == [("finit_module", "mod_loop_b"),
                                         ("finit_module", "mod_loop_a")]
    assert loaded(kernel) == {"mod_loop_a", "mod_loop_b"}
    module = kernel.module("mod_loop_b")
    assert module is not None and module.users == ["mod_loop_a"]


def test_a_post_softdep_on_a_module_that_depends_on_it_loads_both(tmp_path):
    """modprobe_softdep_loop."""
    kernel = FakeKernel(tree(tmp_path, LOOP, {
        "etc/modprobe.d/dumb-softdep.conf": "softdep mod-loop-b post: mod-loop-a\n"}))
    assert modprobe(kernel, "mod-loop-b") == Ran(0, b"", b"")
    assert loaded(kernel) == {"mod_loop_a", "mod_loop_b"}


def test_weakdep_is_a_bad_line_for_kmod_30_and_loads_nothing_more(tmp_path):
    """modprobe_weakdep_loop: weakdeps are never loaded (and kmod 30 rejects the line)."""
    kernel = FakeKernel(tree(tmp_path, {**SIMPLE, **LOOP}, {
        "etc/modprobe.d/dumb-weakdep.conf": "weakdep mod-loop-b mod-loop-a mod-simple\n"}))
    assert modprobe(kernel, "mod-loop-b") == Ran(0, b"", (
        b"libkmod: ERROR ../libkmod/libkmod-config.c:712 kmod_config_parse: "
        b"/etc/modprobe.d/dumb-weakdep.conf line 1: ignoring bad line starting with "
        b"'weakdep'\n"))
    assert loaded(kernel) == {"mod_loop_b"}


def test_an_install_command_that_runs_modprobe_again_ends_with_both_loaded(tmp_path):
    """modprobe_install_cmd_loop: the nested modprobe is kmodd's, in its own process, on the
    same root and the same simulated kernel."""
    root = tree(tmp_path, LOOP, {
        "etc/modprobe.d/dumb-instal-loop.conf":
            "install mod-loop-b $MODPROBE --ignore-install mod-loop-b && "
            "{ $MODPROBE --quiet mod-loop-a ; }\n"})
    kernel = FakeKernel(root)
    environ = {"MODPROBE": nested_modprobe_command(str(tmp_path)), "KMODD_ROOT": root.prefix,
               KERNEL_SOCKET_ENV: str(tmp_path / "kernel.sock"),
               "MODPROBE_OPTIONS": f"-S {KVER}", "PATH": os.environ["PATH"]}
    with SyscallServer(kernel, environ[KERNEL_SOCKET_ENV]):
        ran = kmodd_tool(["modprobe", "mod-loop-a"], root=root, environ=environ,
                         kernel=kernel.port())
    assert ran == Ran(0, b"", b"")
    assert loaded(kernel) == {"mod_loop_a", "mod_loop_b"}
    # b by the first nested modprobe, a by the second; the outer one found both loaded
    assert kernel.calls == [("finit_module", "mod_loop_b"), ("finit_module", "mod_loop_a")]


def bad_vermagic_module() -> dict[str, object]:
    return {"modinfo": standard_modinfo("mod_simple", vermagic="3.3.3 SMP mod_unload ")}


def test_a_module_for_another_kernel_fails_without_force(tmp_path):
    kernel = FakeKernel(tree(tmp_path, {"kernel/mod-simple.ko": bad_vermagic_module()}))
    assert modprobe(kernel, "mod-simple") == Ran(
        1, b"", b"modprobe: ERROR: could not insert 'mod_simple': Exec format error\n")
    assert kernel.kmsg_texts()[-1] == (
        f"mod_simple: version magic '3.3.3 SMP mod_unload ' should be '{DEBIAN_VERMAGIC}'")


@pytest.mark.parametrize(("flag", "finit_flags"), [
    ("--force", 3), ("--force-vermagic", 2), ("-f", 3)])
def test_force_flags_reach_finit_module_and_the_module_loads(tmp_path, monkeypatch, flag,
                                                             finit_flags):
    """modprobe_force."""
    kernel = FakeKernel(tree(tmp_path, {"kernel/mod-simple.ko": bad_vermagic_module()}))
    seen: list[int] = []
    finit = kernel.finit_module

    def finit_module(fd: int, params: bytes, flags: int) -> int:
        seen.append(flags)
        return finit(fd, params, flags)

    monkeypatch.setattr(kernel, "finit_module", finit_module)
    assert modprobe(kernel, flag, "mod-simple") == Ran(0, b"", b"")
    assert seen == [finit_flags]
    assert loaded(kernel) == {"mod_simple"}


def test_force_modversion_loads_past_a_symbol_crc_the_kernel_disagrees_with(tmp_path):
    """modprobe_force_modversion (kmod HEAD's name)."""
    kernel_crcs = {"printk": 0x1111}
    kernel = FakeKernel(tree(tmp_path, {"kernel/mod-simple.ko": {
        "needs": ["printk"], "kernel_crcs": {"printk": 0x2222}}}), kallsyms=kernel_crcs)
    assert modprobe(kernel, "mod-simple") == Ran(
        1, b"", b"modprobe: ERROR: could not insert 'mod_simple': Invalid argument\n")
    assert modprobe(kernel, "--force-modversion", "mod-simple") == Ran(0, b"", b"")
    assert loaded(kernel) == {"mod_simple"}


def test_a_kernel_without_finit_module_gets_the_image_through_init_module(tmp_path):
    """modprobe_oldkernel."""
    kernel = FakeKernel(tree(tmp_path, SIMPLE), has_finit_module=False)
    assert modprobe(kernel, "mod-simple") == Ran(0, b"", b"")
    assert kernel.calls == [("init_module", "mod_simple")]
    assert loaded(kernel) == {"mod_simple"}


def test_force_on_a_kernel_without_finit_module_strips_vermagic_and_versions(tmp_path):
    """modprobe_oldkernel_force: the image handed to init_module has no vermagic string and
    no allocated __versions, which the kernel answers by force-loading (taint F)."""
    kernel = FakeKernel(tree(tmp_path, {"kernel/mod-simple.ko": {
        **bad_vermagic_module(), "needs": ["printk"], "kernel_crcs": {"printk": 0x2222}}}),
        has_finit_module=False, kallsyms={"printk": 0x1111})
    assert modprobe(kernel, "--force", "mod-simple") == Ran(0, b"", b"")
    assert kernel.calls == [("init_module", "mod_simple")]
    assert "mod_simple: bad vermagic: kernel tainted." in kernel.kmsg_texts()
    assert loaded(kernel) == {"mod_simple"}


def test_a_module_outside_the_module_directory_loads_from_its_absolute_path(tmp_path):
    """modprobe_external."""
    kernel = FakeKernel(tree(tmp_path, {"/lib/modules/external/mod-simple.ko": {}}, {
        "etc/depmod.d/external.conf": f"external {KVER} /lib/modules/external\n"}))
    assert modprobe(kernel, "mod-simple") == Ran(0, b"", b"")
    assert loaded(kernel) == {"mod_simple"}


def test_an_already_loaded_module_is_success_and_first_time_makes_it_an_error(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE))
    assert modprobe(kernel, "mod-simple") == Ran(0, b"", b"")
    assert modprobe(kernel, "mod-simple") == Ran(0, b"", b"")
    assert modprobe(kernel, "--first-time", "mod-simple") == Ran(
        1, b"", b"modprobe: ERROR: could not insert 'mod_simple': Module already in kernel\n")
    assert kernel.calls == [("finit_module", "mod_simple")]


@pytest.mark.parametrize(("setup", "message"), [
    ({"needs": ["nowhere"]}, "Unknown symbol in module, or unknown parameter (see dmesg)"),
    ({"kernel": {"module_blacklist": ["mod_simple"]}}, "Operation not permitted"),
    ({"kernel": {"sig_enforce": True}}, "Key was rejected by service"),
    ({"kernel": {"init_errors": {"mod_simple": E.ENODEV}}}, "No such device"),
])
def test_kernel_refusals_are_worded_as_kmod_words_them(tmp_path, setup, message):
    kernel = FakeKernel(tree(tmp_path, {"kernel/mod-simple.ko": {
        "needs": setup.get("needs", [])}}), **setup.get("kernel", {}))
    assert modprobe(kernel, "mod-simple") == Ran(
        1, b"", f"modprobe: ERROR: could not insert 'mod_simple': {message}\n".encode())
    assert loaded(kernel) == set()


def test_verbose_prints_each_insmod_as_it_goes(tmp_path):
    kernel = FakeKernel(tree(tmp_path, LOOP, {"etc/modprobe.d/o.conf": "options mod-loop-a x=1\n"}))
    assert modprobe(kernel, "-v", "mod-loop-a") == Ran(
        0, b"insmod /lib/modules/4.4.4/kernel/mod-loop-b.ko \n"
           b"insmod /lib/modules/4.4.4/kernel/mod-loop-a.ko x=1 \n", b"")


# --- install commands ---------------------------------------------------------------------

def test_install_command_gets_cmdline_opts_and_modprobe_module(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE, {"etc/modprobe.d/i.conf": (
        "options mod-simple a=1\n"
        "install mod-simple echo \"$MODPROBE_MODULE:$CMDLINE_OPTS:$CMDLINE_OPTS\"\n")}))
    assert modprobe(kernel, "mod-simple", "b=2") == Ran(0, b"mod_simple:a=1 b=2:a=1 b=2\n", b"")
    assert loaded(kernel) == set()


def test_a_failing_install_command_is_kmods_two_errors(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE, {
        "etc/modprobe.d/i.conf": "install mod-simple /bin/false\n"}))
    assert modprobe(kernel, "mod-simple") == Ran(1, b"", (
        b"modprobe: ERROR: ../libkmod/libkmod-module.c:1047 command_do() Error running "
        b"install command '/bin/false' for module mod_simple: retcode 1\n"
        b"modprobe: ERROR: could not insert 'mod_simple': Invalid argument\n"))


def test_a_softdep_makes_modprobe_ignore_the_install_command(tmp_path):
    """modprobe.d(5) and kmod #446: `install X /bin/false` has no effect on a module with
    softdeps."""
    kernel = FakeKernel(tree(tmp_path, {**SIMPLE, **LOOP}, {"etc/modprobe.d/i.conf": (
        "install mod-simple /bin/false\nsoftdep mod-simple pre: mod-loop-b\n")}))
    assert modprobe(kernel, "mod-simple") == Ran(0, b"", b"")
    assert loaded(kernel) == {"mod_simple", "mod_loop_b"}


def test_a_command_loading_its_own_module_again_stops_at_the_nesting_limit(tmp_path):
    root = tree(tmp_path, SIMPLE, {
        "etc/modprobe.d/i.conf": "install mod-simple $MODPROBE mod-simple\n"})
    kernel = FakeKernel(root)
    environ = {"MODPROBE": nested_modprobe_command(str(tmp_path)), "KMODD_ROOT": root.prefix,
               KERNEL_SOCKET_ENV: str(tmp_path / "kernel.sock"),
               "MODPROBE_OPTIONS": f"-S {KVER}", "PATH": os.environ["PATH"]}
    with SyscallServer(kernel, environ[KERNEL_SOCKET_ENV]):
        ran = kmodd_tool(["modprobe", "mod-simple"], root=root, environ=environ,
                         kernel=kernel.port())
    command = "$MODPROBE mod-simple"
    innermost = (
        f"modprobe: ERROR: not running install command '{command}' for module mod_simple: "
        f"commands are already nested {COMMAND_NESTING_MAX} deep ({COMMAND_DEPTH_ENV}, limit "
        f"{COMMAND_NESTING_MAX}); the command probably loads its own module again\n"
        "modprobe: ERROR: could not insert 'mod_simple': Invalid argument\n")
    level = (
        "modprobe: ERROR: ../libkmod/libkmod-module.c:1047 command_do() Error running install "
        f"command '{command}' for module mod_simple: retcode 1\n"
        "modprobe: ERROR: could not insert 'mod_simple': Invalid argument\n")
    assert ran == Ran(1, b"", (innermost + level * COMMAND_NESTING_MAX).encode())
    assert loaded(kernel) == set()


def test_an_install_command_that_hangs_is_killed_with_everything_it_started(tmp_path):
    pidfile = tmp_path / "pids"
    kernel = FakeKernel(tree(tmp_path, SIMPLE, {"etc/modprobe.d/i.conf": (
        f"install mod-simple sleep 60 & echo $! > {pidfile}; wait\n")}))
    ran = modprobe(kernel, "mod-simple", environ={COMMAND_TIMEOUT_ENV: "0.5"})
    command = f"sleep 60 & echo $! > {pidfile}; wait"
    assert ran == Ran(1, b"", (
        f"modprobe: ERROR: install command '{command}' for module mod_simple was killed "
        f"after 0.5 s ({COMMAND_TIMEOUT_ENV})\n"
        "modprobe: ERROR: could not insert 'mod_simple': Timer expired\n").encode())
    assert not running(int(pidfile.read_text()))


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan stays one where PID 1 does not reap)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def test_a_shell_killed_by_a_signal_counts_as_success_as_wexitstatus_makes_it(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE, {
        "etc/modprobe.d/i.conf": f"install mod-simple kill -{int(signal.SIGTERM)} $$\n"}))
    assert modprobe(kernel, "mod-simple") == Ran(0, b"", b"")


# --- removal ----------------------------------------------------------------------------------

def test_remove_takes_the_module_and_its_unused_dependencies(tmp_path):
    kernel = FakeKernel(tree(tmp_path, LOOP))
    modprobe(kernel, "mod-loop-a")
    assert modprobe(kernel, "-r", "-v", "mod-loop-a") == Ran(
        0, b"rmmod mod_loop_a\nrmmod mod_loop_b\n", b"")
    assert loaded(kernel) == set()


REMOVED_TWICE = (b"modprobe: ERROR: ../libkmod/libkmod-module.c:856 kmod_module_remove_module() "
                 b"could not remove 'mod_loop_b': No such file or directory\n")


def test_remove_of_a_module_others_hold_is_refused_unless_holders_go_too(tmp_path):
    """kmod 30 removes the holder, whose now unused dependency (the module asked for) goes
    with it, then tries the module itself again: ENOENT, exit 1 (kmod c1aff4b, 2025)."""
    kernel = FakeKernel(tree(tmp_path, LOOP))
    modprobe(kernel, "mod-loop-a")
    assert modprobe(kernel, "-r", "mod-loop-b") == Ran(
        1, b"", b"modprobe: FATAL: Module mod_loop_b is in use.\n")
    assert loaded(kernel) == {"mod_loop_a", "mod_loop_b"}
    assert modprobe(kernel, "-r", "-v", "--remove-holders", "mod-loop-b") == Ran(
        1, b"rmmod mod_loop_a\nrmmod mod_loop_b\nrmmod mod_loop_b\n", REMOVED_TWICE)
    assert loaded(kernel) == set()


def test_remove_dependencies_is_the_old_name_of_remove_holders(tmp_path):
    kernel = FakeKernel(tree(tmp_path, LOOP))
    modprobe(kernel, "mod-loop-a")
    assert modprobe(kernel, "-r", "--remove-dependencies", "mod-loop-b") == Ran(
        1, b"", REMOVED_TWICE)
    assert loaded(kernel) == set()


def test_remove_holders_stops_at_a_holder_in_use(tmp_path):
    kernel = FakeKernel(tree(tmp_path, LOOP))
    modprobe(kernel, "mod-loop-a")
    kernel.hold("mod_loop_a")
    assert modprobe(kernel, "-r", "--remove-holders", "mod-loop-b") == Ran(
        1, b"", b"modprobe: FATAL: Module mod_loop_a is in use.\n")
    assert loaded(kernel) == {"mod_loop_a", "mod_loop_b"}


def test_remove_of_a_module_not_loaded_is_quiet_unless_first_time(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE))
    assert modprobe(kernel, "-r", "mod-simple") == Ran(0, b"", b"")
    assert modprobe(kernel, "-r", "--first-time", "mod-simple") == Ran(
        1, b"", b"modprobe: FATAL: Module mod_simple is not in kernel.\n")


def test_a_failing_delete_module_is_libkmods_error(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE), delete_errors={"mod_simple": E.EPERM})
    modprobe(kernel, "mod-simple")
    assert modprobe(kernel, "-r", "mod-simple") == Ran(1, b"", (
        b"modprobe: ERROR: ../libkmod/libkmod-module.c:856 kmod_module_remove_module() "
        b"could not remove 'mod_simple': Operation not permitted\n"))


class BusyAtFirst:
    """The simulated kernel's syscalls, with delete_module answering EAGAIN `busy` times."""

    def __init__(self, kernel: FakeKernel, busy: int) -> None:
        self.kernel = kernel
        self.busy = busy
        self.deletes = 0

    def finit_module(self, fd: int, params: bytes, flags: int) -> int:
        return self.kernel.finit_module(fd, params, flags)

    def init_module(self, image: bytes, params: bytes) -> int:
        return self.kernel.init_module(image, params)

    def delete_module(self, name: bytes, flags: int) -> int:
        self.deletes += 1
        if self.deletes <= self.busy:
            return E.EAGAIN
        return self.kernel.delete_module(name, flags)


def test_wait_retries_a_busy_module_until_it_goes(tmp_path):
    from kmodd.system.kernel import LinuxKernel

    kernel = FakeKernel(tree(tmp_path, SIMPLE))
    modprobe(kernel, "mod-simple")
    busy = BusyAtFirst(kernel, 3)
    port = LinuxKernel(kernel.root, syscalls=busy)
    assert modprobe(kernel, "-r", "-w", "10000", "mod-simple", port=port) == Ran(0, b"", b"")
    assert busy.deletes == 4
    assert loaded(kernel) == set()


def test_wait_that_runs_out_ends_quietly_with_success_as_kmod_30_does(tmp_path):
    """kmod 30 returns 0 when the deadline passes (fixed upstream in 2025, 4d7dc86)."""
    kernel = FakeKernel(tree(tmp_path, SIMPLE))
    modprobe(kernel, "mod-simple")
    kernel.hold("mod_simple")  # an open device: delete_module says EWOULDBLOCK (EAGAIN)
    assert modprobe(kernel, "-r", "-w", "20", "mod-simple") == Ran(0, b"", b"")
    assert loaded(kernel) == {"mod_simple"}


def test_without_wait_a_referenced_module_is_in_use(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE))
    modprobe(kernel, "mod-simple")
    kernel.hold("mod_simple")
    assert modprobe(kernel, "-r", "mod-simple") == Ran(
        1, b"", b"modprobe: FATAL: Module mod_simple is in use.\n")


def test_remove_command_runs_instead_of_delete_module(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE, {
        "etc/modprobe.d/r.conf": "remove mod-simple echo bye $MODPROBE_MODULE $CMDLINE_OPTS.\n"}))
    assert modprobe(kernel, "-r", "mod-simple") == Ran(0, b"bye mod_simple .\n", b"")


@pytest.mark.parametrize(("now", "tend", "delta", "expected"), [
    (100, 1100, 1, (102, 2)),  # the first retry after 2 ms
    (100, 1100, 512, (612, 512)),  # 1024 does not fit: halved
    (1099, 1100, 8, (1100, 1)),  # halved down to what is left
    (1100, 1100, 8, (1100, 0)),  # exactly at the deadline: done
    (1101, 1100, 8, (1101, 0)),  # past it (kmod 30 spins here): done
])
def test_backoff_follows_kmods_get_backoff_delta_msec(now, tend, delta, expected):
    assert backoff_delta_msec(now, tend, delta) == expected


# --- against the real modprobe on this host (no module support: every insert is ENOSYS) ------

@pytest.mark.skipif(not MODULE_LESS_KERNEL, reason="only safe on a kernel without modules")
@pytest.mark.parametrize("args", [["mod-loop-a"], ["mod-simple", "a=1"], ["-f", "mod-simple"],
                                  ["-a", "mod-simple", "mod-loop-b"]])
def test_on_this_host_a_real_load_fails_with_enosys_as_kmods_does(tmp_path, args):
    root = tree(tmp_path, {**SIMPLE, **LOOP})
    argv = ["modprobe", "-d", root.prefix, "-S", KVER, *args]
    ours = kmodd_tool(argv, root=Root(), environ={})
    assert ours == real_tool(argv)
    assert ours.err.endswith(b": Function not implemented\n")


def test_run_reads_the_module_file_under_the_root_not_on_the_host(tmp_path):
    kernel = FakeKernel(tree(tmp_path, SIMPLE))
    out, err = io.BytesIO(), io.BytesIO()
    rc = run(["modprobe", "-S", KVER, "mod-simple"], root=kernel.root, stdout=out, stderr=err,
             environ={}, kernel=kernel.port())
    assert (rc, out.getvalue(), err.getvalue()) == (0, b"", b"")
    assert not os.path.exists(f"/lib/modules/{KVER}")
