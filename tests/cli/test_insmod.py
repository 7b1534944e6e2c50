"""insmod: kmod 30's messages and exit codes, on the simulated kernel and on this host."""

import errno as E
import os

import pytest

from kmodd.system.root import Root
from tests.fakes import FakeKernel
from tests.kofixtures import standard_modinfo, write_module
from tests.toolrun import kmodd_tool, real_tool

MODULE_LESS_KERNEL = not os.path.exists("/proc/modules")


@pytest.fixture
def root(tmp_path):
    os.makedirs(tmp_path / "root")
    return Root(str(tmp_path / "root"))


@pytest.fixture
def mods(tmp_path):
    def make(name, **kw):
        kw.setdefault("layout_crc", 1)
        return write_module(str(tmp_path / "mods"), name, **kw)
    return make


def insmod(kernel, *args):
    return kmodd_tool(["insmod", *args], root=kernel.root, kernel=kernel.port())


def test_a_successful_insert_prints_nothing(root, mods):
    kernel = FakeKernel(root, module_layout_crc=1, module_sig=False)
    ran = insmod(kernel, mods("mod_a", modinfo=standard_modinfo("mod_a", "parmtype=x:int",
                                                                 "parmtype=y:bool")), "x=3", "y")
    assert (ran.rc, ran.out, ran.err) == (0, b"", b"")
    module = kernel.module("mod_a")
    assert module is not None and module.params == {"x": "3", "y": "Y"}


@pytest.mark.parametrize("setup,errno,text", [
    ({"needs": ["nowhere"]}, E.ENOENT, "Unknown symbol in module"),
    ({"modinfo": standard_modinfo("mod_a", vermagic="4.19.0 SMP ")}, E.ENOEXEC,
     "Invalid module format"),
    ({"modinfo": standard_modinfo("mod_a", "parmtype=x:int"), "args": ["x=oops"]}, E.EINVAL,
     "Invalid parameters"),
    ({"kernel": {"init_errors": {"mod_a": E.ENODEV}}}, E.ENODEV, "No such device"),
    ({"kernel": {"module_blacklist": ["mod_a"]}}, E.EPERM, "Operation not permitted"),
    ({"kernel": {"sig_enforce": True, "module_sig": True}}, E.EKEYREJECTED,
     "Key was rejected by service"),
])
def test_failures_are_worded_with_insmods_own_table(root, mods, setup, errno, text):
    args = setup.pop("args", [])
    kernel = FakeKernel(root, module_layout_crc=1, **{"module_sig": False,
                                                      **setup.pop("kernel", {})})
    path = mods("mod_a", **setup)
    ran = insmod(kernel, path, *args)
    assert ran.rc == 1
    assert ran.err == f"insmod: ERROR: could not insert module {path}: {text}\n".encode()


def test_a_second_insert_says_file_exists(root, mods):
    kernel = FakeKernel(root, module_layout_crc=1, module_sig=False)
    path = mods("mod_a")
    insmod(kernel, path)
    assert insmod(kernel, path).err == \
        f"insmod: ERROR: could not insert module {path}: File exists\n".encode()


def test_force_ignores_vermagic_and_modversions(root, mods):
    kernel = FakeKernel(root, module_layout_crc=1, module_sig=False)
    path = mods("mod_a", modinfo=standard_modinfo("mod_a", vermagic="4.19.0 SMP "),
                layout_crc=99)
    assert insmod(kernel, "-f", path).rc == 0
    assert kernel.calls[-1] == ("finit_module", "mod_a")


def test_p_and_s_are_accepted_and_ignored(root, mods):
    kernel = FakeKernel(root, module_layout_crc=1, module_sig=False)
    assert insmod(kernel, "-p", "-s", mods("mod_a")).rc == 0


# --- against the real insmod on this host (no module support: every insert is ENOSYS) --------

@pytest.mark.skipif(not MODULE_LESS_KERNEL, reason="only safe on a kernel without modules")
@pytest.mark.parametrize("extra", [[], ["a=1", "b"], ["-f"]])
def test_on_this_host_both_fail_with_enosys_alike(mods, extra):
    path = mods("mod_a")
    argv = ["insmod", *(extra if extra == ["-f"] else []), path,
            *([] if extra == ["-f"] else extra)]
    ours, real = kmodd_tool(argv, root=Root()), real_tool(argv)
    assert ours == real
    assert ours.err.endswith(b": Function not implemented\n")


@pytest.mark.parametrize("make_argv", [
    lambda d: ["insmod"],
    lambda d: ["insmod", "-"],
    lambda d: ["insmod", f"{d}/missing.ko"],
    lambda d: ["insmod", f"{d}/dir/"],
    lambda d: ["insmod", f"{d}/short.ko"],
    lambda d: ["insmod", "-x"],
    lambda d: ["insmod", "--help=1"],
    lambda d: ["insmod", "-h"],
    lambda d: ["insmod", "--version"],
])
def test_usage_and_file_errors_match_the_real_insmod(tmp_path, make_argv):
    (tmp_path / "dir").mkdir()
    (tmp_path / "short.ko").write_bytes(b"\x7fEL")
    argv = make_argv(str(tmp_path))
    assert kmodd_tool(argv, root=Root()) == real_tool(argv)
