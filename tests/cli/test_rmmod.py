"""rmmod: kmod 30's checks and messages, on the simulated kernel and against the real rmmod."""

import importlib.util
import os
import shutil

import pytest

from kmodd.system.root import Root
from tests.fakes import FakeKernel
from tests.kerneltree import debian_kernel_tree
from tests.kofixtures import write_module
from tests.toolrun import can_mask_host, kmodd_tool, real_tool, real_tool_in_root

MODULE_LESS_KERNEL = not os.path.exists("/proc/modules")
needs_host_masking = pytest.mark.skipif(
    not (can_mask_host() and MODULE_LESS_KERNEL),
    reason="needs root, unshare and a host without modules (delete_module must fail)")


@pytest.fixture
def root(tmp_path):
    os.makedirs(tmp_path / "root")
    return Root(str(tmp_path / "root"))


@pytest.fixture
def kernel(root, tmp_path):
    """fat used by vfat and msdos; loop_like held by three references; lone unused."""
    kernel = FakeKernel(root, module_layout_crc=1, module_sig=False)
    mods = str(tmp_path / "mods")
    port = kernel.port()
    port.insert(write_module(mods, "fat", exports=["fat_fill_super"],
                             export_crcs={"fat_fill_super": 3}, layout_crc=1))
    for user in ("vfat", "msdos"):
        port.insert(write_module(mods, user, needs=["fat_fill_super"],
                                 kernel_crcs={"fat_fill_super": 3}, layout_crc=1))
    port.insert(write_module(mods, "loop_like", layout_crc=1))
    port.insert(write_module(mods, "lone", layout_crc=1))
    kernel.hold("loop_like", 3)
    return kernel


def rmmod(kernel, *args, **kw):
    return kmodd_tool(["rmmod", *args], root=kernel.root, kernel=kernel.port(), **kw)


def test_a_module_once_removed_is_not_currently_loaded(kernel):
    assert rmmod(kernel, "lone").rc == 0
    ran = rmmod(kernel, "lone")
    assert ran.rc == 1
    assert ran.err == b"rmmod: ERROR: Module lone is not currently loaded\n"


def test_removal_leaves_no_sysfs_and_exits_zero(kernel, root):
    ran = rmmod(kernel, "vfat")
    assert (ran.rc, ran.out, ran.err) == (0, b"", b"")
    assert not os.path.exists(root.sys_module("vfat"))


def test_a_module_with_holders_names_them(kernel, root):
    ran = rmmod(kernel, "fat")
    holders = " ".join(os.listdir(root.sys_module("fat", "holders")))
    assert ran.rc == 1
    assert ran.err == f"rmmod: ERROR: Module fat is in use by: {holders}\n".encode()
    assert kernel.module("fat") is not None


def test_a_referenced_module_is_in_use(kernel):
    assert rmmod(kernel, "loop_like").err == b"rmmod: ERROR: Module loop_like is in use\n"


def test_force_skips_the_checks_and_reports_the_kernels_refusal(kernel):
    ran = rmmod(kernel, "-f", "fat")
    assert ran.rc == 1
    assert ran.err == (b"rmmod: ERROR: ../libkmod/libkmod-module.c:856 "
                       b"kmod_module_remove_module() could not remove 'fat': "
                       b"Resource temporarily unavailable\n"
                       b"rmmod: ERROR: could not remove module fat: "
                       b"Resource temporarily unavailable\n")
    assert rmmod(kernel, "-f", "loop_like").rc == 0
    assert kernel.calls[-1] == ("delete_module", "loop_like")


def test_each_argument_is_tried_and_any_failure_fails_the_run(kernel):
    ran = rmmod(kernel, "nope", "lone", "loop_like")
    assert ran.rc == 1
    assert ran.err == (b"rmmod: ERROR: Module nope is not currently loaded\n"
                       b"rmmod: ERROR: Module loop_like is in use\n")
    assert kernel.module("lone") is None


def test_a_path_names_the_module_by_its_base_name(kernel, tmp_path):
    path = tmp_path / "lone.ko"
    path.write_bytes(b"")
    assert rmmod(kernel, str(path)).rc == 0


def test_builtin_modules_are_refused(root):
    os.makedirs(root.path("/sys/module/vt/parameters"))
    ran = kmodd_tool(["rmmod", "vt"], root=root, builtin=lambda name: name == "vt")
    assert (ran.rc, ran.err) == (1, b"rmmod: ERROR: Module vt is builtin.\n")


def test_a_kernel_without_unloading_has_no_refcnt(root):
    os.makedirs(root.sys_module("old", "holders"))
    with open(root.sys_module("old", "initstate"), "w") as f:
        f.write("live\n")
    ran = kmodd_tool(["rmmod", "old"], root=root)
    assert (ran.rc, ran.err) == (1, b"rmmod: ERROR: Module unloading is not supported\n")


def test_syslog_gets_the_messages_but_holder_names_still_go_to_stderr(kernel, root,
                                                                        monkeypatch):
    import syslog

    logged = []
    monkeypatch.setattr(syslog, "openlog", lambda *a: logged.append(("open", *a)))
    monkeypatch.setattr(syslog, "syslog", lambda prio, msg: logged.append((prio, msg)))
    monkeypatch.setattr(syslog, "closelog", lambda: logged.append(("close",)))
    ran = rmmod(kernel, "-s", "fat", "nope")
    holders = " ".join(os.listdir(root.sys_module("fat", "holders")))
    assert ran.err == f" {holders}\n".encode()
    assert logged == [("open", "rmmod", syslog.LOG_CONS, syslog.LOG_DAEMON),
                      (3, "ERROR: Module fat is in use by:"),
                      (3, "ERROR: Module nope is not currently loaded\n"),
                      ("close",)]


# --- against the real rmmod reading the same /sys/module -------------------------------------

def host_rmmod(root, argv):
    ours = kmodd_tool(argv, root=root)  # the real syscalls: ENOSYS on this host
    real = real_tool_in_root(argv, root, binds=("/sys/module",))
    return ours, real


@needs_host_masking
@pytest.mark.parametrize("args", [
    ["fat"], ["loop_like"], ["lone"], ["nope"], ["-f", "fat"], ["-v", "lone"],
    ["vfat", "nope", "msdos"], ["-f", "nope", "lone"], [],
])
def test_same_messages_as_the_real_rmmod(kernel, root, args):
    ours, real = host_rmmod(root, ["rmmod", *args])
    assert ours == real


@pytest.mark.parametrize("argv", [["rmmod", "-w", "x"], ["rmmod", "-h"], ["rmmod", "-V"],
                                  ["rmmod", "--force=1", "x"], ["rmmod", "--bogus"],
                                  ["rmmod", "-Q"]])
def test_options_match_the_real_rmmod(argv):
    assert kmodd_tool(argv, root=Root()) == real_tool(argv)


@pytest.mark.skipif(not MODULE_LESS_KERNEL, reason="only safe on a kernel without modules")
def test_on_this_host_a_name_not_loaded_and_a_forced_removal_match(tmp_path):
    for argv in (["rmmod", "fat"], ["rmmod", "-f", "fat"], ["rmmod", "-f", "-v", "a-b"]):
        assert kmodd_tool(argv, root=Root()) == real_tool(argv)


HAS_INDEX_READER = importlib.util.find_spec("kmodd.system.moddb") is not None


@pytest.mark.oracle
@pytest.mark.skipif(not (HAS_INDEX_READER and can_mask_host()),
                    reason="needs kmodd.system.moddb (lead's index reader), root and unshare")
def test_a_builtin_found_in_modules_builtin_bin_is_refused_like_the_real_rmmod(root):
    tree = debian_kernel_tree()
    moddir = root.path(f"/lib/modules/{os.uname().release}")
    os.makedirs(moddir)
    shutil.copy(f"{tree.moddir}/modules.builtin.bin", moddir)
    os.makedirs(root.path("/sys/module/unix"))
    argv = ["rmmod", "unix"]
    ours = kmodd_tool(argv, root=root)
    real = real_tool_in_root(argv, root, binds=("/sys/module", "/lib/modules"))
    assert ours == real
    assert ours.err == b"rmmod: ERROR: Module unix is builtin.\n"
