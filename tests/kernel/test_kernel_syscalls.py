"""LinuxKernel: which syscall with which arguments, the ENOSYS fallback, and this kernel."""

import errno as E
import gzip
import lzma
import os

import pytest

from kmodd.system.kernel import (
    SYSCALL_NUMBERS,
    InsertFlag,
    LibcSyscalls,
    LinuxKernel,
    detect_compression,
    machine,
)
from kmodd.system.root import Root
from tests.kofixtures import standard_modinfo, write_module

MODULE_LESS_KERNEL = not os.path.exists("/proc/modules")


class Recorder:
    """Syscalls that record their arguments and answer from a script."""

    def __init__(self, finit=0, init=0, delete=0):
        self.answers = {"finit_module": finit, "init_module": init, "delete_module": delete}
        self.calls = []

    def finit_module(self, fd, params, flags):
        self.calls.append(("finit_module", os.fstat(fd).st_size, params, flags))
        return self.answers["finit_module"]

    def init_module(self, image, params):
        self.calls.append(("init_module", image, params))
        return self.answers["init_module"]

    def delete_module(self, name, flags):
        self.calls.append(("delete_module", name, flags))
        return self.answers["delete_module"]


class Codec:
    def decompress(self, kind, data):
        return {"xz": lzma.decompress, "gzip": gzip.decompress}[kind](data)


@pytest.fixture
def root(tmp_path):
    os.makedirs(tmp_path / "sys" / "module")
    return Root(str(tmp_path))


@pytest.fixture
def ko(tmp_path):
    return write_module(str(tmp_path / "m"), "mod_a", needs=["printk"],
                        kernel_crcs={"printk": 7}, layout_crc=9)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def set_compression(root, kind):
    with open(root.path("/sys/module/compression"), "w") as f:
        f.write(kind + "\n")


def test_x86_64_uses_syscall_313_for_finit_module():
    assert SYSCALL_NUMBERS["x86_64"].finit_module == 313
    assert SYSCALL_NUMBERS["aarch64"].finit_module == 273
    assert SYSCALL_NUMBERS["riscv64"].finit_module == 273
    assert machine() in SYSCALL_NUMBERS


def test_plain_module_goes_to_finit_module_with_options_and_no_flags(root, ko):
    sys = Recorder()
    result = LinuxKernel(root, syscalls=sys).insert(ko, "debug=1 name=x")
    assert result.ok and result.syscall == "finit_module"
    assert sys.calls == [("finit_module", os.path.getsize(ko), b"debug=1 name=x", 0)]


def test_force_flags_become_ignore_vermagic_and_ignore_modversions(root, ko):
    sys = Recorder()
    LinuxKernel(root, syscalls=sys).insert(ko, force_vermagic=True, force_modversion=True)
    assert sys.calls[0][3] == InsertFlag.IGNORE_VERMAGIC | InsertFlag.IGNORE_MODVERSIONS == 3


def test_a_finit_error_other_than_enosys_is_final(root, ko):
    sys = Recorder(finit=E.ENOEXEC)
    result = LinuxKernel(root, syscalls=sys).insert(ko)
    assert (result.errno, result.syscall) == (E.ENOEXEC, "finit_module")
    assert [c[0] for c in sys.calls] == ["finit_module"]


def test_compressed_module_matching_the_kernels_decompressor_goes_to_finit_flagged(root, tmp_path,
                                                                                   ko):
    xz = tmp_path / "mod_a.ko.xz"
    xz.write_bytes(lzma.compress(read(ko)))
    set_compression(root, "xz")
    sys = Recorder()
    result = LinuxKernel(root, syscalls=sys).insert(str(xz))
    assert (result.syscall, result.compression) == ("finit_module", "xz")
    assert sys.calls[0][3] == InsertFlag.COMPRESSED_FILE


def test_compression_the_kernel_lacks_is_decompressed_in_user_space(root, tmp_path, ko):
    gz = tmp_path / "mod_a.ko.gz"
    gz.write_bytes(gzip.compress(read(ko)))
    set_compression(root, "zstd")
    sys = Recorder()
    result = LinuxKernel(root, syscalls=sys, codec=Codec()).insert(str(gz), "x=1")
    assert result.ok and result.syscall == "init_module"
    assert sys.calls == [("init_module", read(ko), b"x=1")]
    assert result.notes == ("the kernel does not decompress gzip (it has zstd): decompressing "
                            "in user space",)


def test_compression_is_detected_by_magic_not_by_name(root, tmp_path, ko):
    disguised = tmp_path / "mod_a.ko"
    disguised.write_bytes(lzma.compress(read(ko)))
    sys = Recorder()
    result = LinuxKernel(root, syscalls=sys, codec=Codec()).insert(str(disguised))
    assert (result.syscall, result.compression) == ("init_module", "xz")
    assert detect_compression(b"\x28\xb5\x2f\xfd..") == "zstd"
    assert detect_compression(b"\x7fELF\x02\x01") is None


def test_undecodable_data_is_einval_at_the_decompress_step(root, tmp_path):
    bad = tmp_path / "bad.ko.xz"
    bad.write_bytes(b"\xfd7zXZ\x00garbage")

    class Failing:
        def decompress(self, kind, data):
            return "xz: File is corrupt"

    result = LinuxKernel(root, syscalls=Recorder(), codec=Failing()).insert(str(bad))
    assert (result.errno, result.syscall) == (E.EINVAL, "decompress")
    assert result.notes[-1] == "xz: File is corrupt"


def test_enosys_falls_back_to_init_module_and_strips_for_the_force_flags(root, ko):
    from kmodd.core.modfile import elf

    sys = Recorder(finit=E.ENOSYS)
    result = LinuxKernel(root, syscalls=sys).insert(ko, force_vermagic=True,
                                                    force_modversion=True)
    assert [c[0] for c in sys.calls] == ["finit_module", "init_module"]
    assert result.syscall == "init_module"
    image = elf.parse_module(sys.calls[1][1])
    versions = image.section("__versions")
    assert versions is not None and not versions.flags & 0x2  # SHF_ALLOC cleared
    assert image.modinfo_values("vermagic") == []
    assert image.modinfo_values("name") == ["mod_a"]


def test_without_force_flags_the_fallback_passes_the_file_unchanged(root, ko):
    sys = Recorder(finit=E.ENOSYS)
    LinuxKernel(root, syscalls=sys).insert(ko)
    assert sys.calls[1][1] == read(ko)


def test_a_module_without_vermagic_is_passed_on_when_stripping_fails(root, tmp_path):
    ko = write_module(str(tmp_path / "m"), "bare", modinfo=["license=GPL", "name=bare"])
    sys = Recorder(finit=E.ENOSYS)
    result = LinuxKernel(root, syscalls=sys).insert(ko, force_vermagic=True)
    assert result.ok
    assert result.notes[-1] == "Failed to strip vermagic: No such file or directory"
    assert sys.calls[1][1] == read(ko)


def test_a_file_shorter_than_six_bytes_is_einval_before_any_syscall(root, tmp_path):
    short = tmp_path / "short.ko"
    short.write_bytes(b"\x7fEL")
    sys = Recorder()
    result = LinuxKernel(root, syscalls=sys).insert(str(short))
    assert (result.errno, result.syscall, sys.calls) == (E.EINVAL, "read", [])


def test_missing_file_and_directory_fail_at_open_and_read(root, tmp_path):
    port = LinuxKernel(root, syscalls=Recorder())
    assert (port.insert(str(tmp_path / "nope.ko")).errno, port.insert(str(tmp_path)).errno) == \
        (E.ENOENT, E.EISDIR)


def test_delete_always_passes_o_nonblock_and_o_trunc_only_when_forced(root):
    sys = Recorder(delete=E.EWOULDBLOCK)
    port = LinuxKernel(root, syscalls=sys)
    assert port.delete("fat") == E.EWOULDBLOCK
    port.delete("fat", force=True)
    assert sys.calls == [("delete_module", b"fat", os.O_NONBLOCK),
                         ("delete_module", b"fat", os.O_NONBLOCK | os.O_TRUNC)]


@pytest.mark.skipif(not MODULE_LESS_KERNEL, reason="only safe on a kernel without modules")
def test_this_module_less_kernel_answers_enosys_to_all_three_syscalls(tmp_path):
    ko = write_module(str(tmp_path), "probe", modinfo=standard_modinfo("probe"))
    libc = LibcSyscalls()
    fd = os.open(ko, os.O_RDONLY)
    try:
        assert libc.finit_module(fd, b"", 0) == E.ENOSYS
        assert libc.finit_module(-1, b"", 99) == E.ENOSYS  # not EBADF/EINVAL: no such syscall
    finally:
        os.close(fd)
    assert libc.init_module(b"\x7fELF" + bytes(60), b"") == E.ENOSYS
    assert libc.delete_module(b"probe", os.O_NONBLOCK) == E.ENOSYS


@pytest.mark.skipif(not MODULE_LESS_KERNEL, reason="only safe on a kernel without modules")
def test_on_this_kernel_an_insert_falls_back_and_ends_in_enosys(tmp_path):
    ko = write_module(str(tmp_path), "probe", modinfo=standard_modinfo("probe"))
    result = LinuxKernel(Root()).insert(ko, "a=1")
    assert (result.errno, result.syscall) == (E.ENOSYS, "init_module")
    assert result.notes == ("finit_module gave ENOSYS; falling back to init_module",)
