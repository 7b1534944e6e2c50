"""lsmod on the simulated kernel, compared with kmod 30's lsmod reading the same files."""

import os

import pytest

from kmodd.system.root import Root
from tests.fakes import FakeKernel
from tests.kofixtures import write_module
from tests.toolrun import can_mask_host, kmodd_tool, real_tool, real_tool_in_root

needs_host_masking = pytest.mark.skipif(not can_mask_host(),
                                        reason="needs root and unshare to mask /proc")


@pytest.fixture
def root(tmp_path):
    os.makedirs(tmp_path / "root")
    return Root(str(tmp_path / "root"))


@pytest.fixture
def loaded(root, tmp_path):
    """fat with two users (vfat, msdos), a referenced module and a lone one."""
    kernel = FakeKernel(root, module_layout_crc=1, module_sig=False)
    mods = str(tmp_path / "mods")
    port = kernel.port()
    assert port.insert(write_module(mods, "fat", exports=["fat_fill_super"],
                                    export_crcs={"fat_fill_super": 3}, layout_crc=1)).ok
    for user in ("vfat", "msdos"):
        assert port.insert(write_module(mods, user, needs=["fat_fill_super"],
                                        kernel_crcs={"fat_fill_super": 3}, layout_crc=1)).ok
    assert port.insert(write_module(mods, "loop_like", layout_crc=1)).ok
    kernel.hold("loop_like", 3)
    return kernel


def test_table_lists_modules_newest_first_with_size_use_count_and_holders(root, loaded):
    ran = kmodd_tool(["lsmod"], root=root)
    holders = ",".join(os.listdir(root.sys_module("fat", "holders")))
    assert ran.rc == 0 and ran.err == b""
    assert ran.out.decode() == (
        "Module                  Size  Used by\n"
        "loop_like               4096  3\n"
        "msdos                   4096  0\n"
        "vfat                    4096  0\n"
        f"fat                     4096  2 {holders}\n")


@needs_host_masking
def test_same_output_as_the_real_lsmod_on_the_same_files(root, loaded):
    assert kmodd_tool(["lsmod"], root=root) == real_tool_in_root(["lsmod"], root)


def write(root, rel, text):
    path = root.path(rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@needs_host_masking
def test_odd_sysfs_states_print_like_the_real_lsmod(root):
    write(root, "/proc/modules",
          "nocoresize 20480 0 - Live 0x0\n"
          "nosysfs 1234 0 - Live 0x0\n"
          "norefcnt 999 0 - Live 0x0\n"
          "badsize 100\n"
          "a-very-long-module-name-indeed 1 0 - Live 0x0\n")
    write(root, "/sys/module/nocoresize/refcnt", "0\n")
    os.makedirs(root.sys_module("nocoresize", "holders"))
    write(root, "/sys/module/norefcnt/coresize", "8192\n")
    write(root, "/sys/module/badsize/refcnt", "1")
    write(root, "/sys/module/a_very_long_module_name_indeed/coresize", "123456789\n")
    write(root, "/sys/module/a_very_long_module_name_indeed/refcnt", "12\n")
    os.makedirs(root.sys_module("a_very_long_module_name_indeed", "holders"))
    ours, real = kmodd_tool(["lsmod"], root=root), real_tool_in_root(["lsmod"], root)
    assert ours == real
    assert b"could not open '/sys/module/nosysfs/holders'" in ours.err


@needs_host_masking
def test_missing_proc_modules_reports_like_the_real_lsmod(root):
    os.makedirs(root.path("/proc"))
    os.makedirs(root.path("/sys/module"))
    ours = kmodd_tool(["lsmod"], root=root)
    assert ours == real_tool_in_root(["lsmod"], root)
    assert ours.rc == 1
    assert ours.err == (b"libkmod: ERROR ../libkmod/libkmod-module.c:1725 "
                        b"kmod_module_new_from_loaded: could not open /proc/modules: "
                        b"No such file or directory\n"
                        b"Error: could not get list of modules: No such file or directory\n")


@pytest.mark.skipif(os.path.exists("/proc/modules"), reason="the host has modules")
def test_on_this_module_less_host_both_tools_fail_alike():
    assert kmodd_tool(["lsmod"], root=Root()) == real_tool(["lsmod"])


def test_kmod_log_0_silences_libkmods_error(root):
    ran = kmodd_tool(["lsmod"], root=root, environ={"KMOD_LOG": "0"})
    assert ran.err == b"Error: could not get list of modules: No such file or directory\n"


@pytest.mark.parametrize("argv", [["lsmod", "-h"], ["lsmod", "x", "y"]])
def test_any_argument_is_a_usage_error(argv):
    assert kmodd_tool(argv) == real_tool(argv)
    assert kmodd_tool(argv).err == b"Usage: lsmod\n"
