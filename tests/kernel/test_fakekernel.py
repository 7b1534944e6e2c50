"""The simulated kernel behaves like Linux 6.1's module loader, as seen from user space."""

import errno as E
import lzma
import os

import pytest

from kmodd.core.kmod.initstate import InitState
from kmodd.system.kmsg import DevKmsg
from kmodd.system.modstate import SysModules
from kmodd.system.root import Root
from tests.fakes import DEBIAN_VERMAGIC, FakeKernel
from tests.kofixtures import make_signing_key, sign_module, standard_modinfo, write_module

KERNEL_CRCS = {"printk": 0x11, "kmalloc": 0x22}
LAYOUT = 0x33


@pytest.fixture
def root(tmp_path):
    os.makedirs(tmp_path / "root")
    return Root(str(tmp_path / "root"))


@pytest.fixture
def kernel(root):
    """A kernel without CONFIG_MODULE_SIG, so that unsigned fixtures load quietly."""
    return FakeKernel(root, kallsyms=KERNEL_CRCS, module_layout_crc=LAYOUT, module_sig=False)


@pytest.fixture
def mods(tmp_path):
    def make(name, **kw):
        kw.setdefault("layout_crc", LAYOUT)
        crcs = {**KERNEL_CRCS, **kw.pop("kernel_crcs", {})}
        return write_module(str(tmp_path / "mods"), name, kernel_crcs=crcs, **kw)
    return make


def read(root, path):
    with open(root.path(path)) as f:
        return f.read()


def test_a_module_with_known_symbols_loads_live_with_its_sysfs(kernel, root, mods):
    result = kernel.port().insert(mods("mod_a", needs=["printk"]))
    assert result.ok
    assert SysModules(root).initstate("mod_a") is InitState.LIVE
    assert read(root, "/sys/module/mod_a/refcnt") == "0\n"
    assert read(root, "/proc/modules") == "mod_a 4096 0 - Live 0x0000000000000000\n"


def test_an_unknown_symbol_is_enoent_with_the_kernels_line_per_symbol(kernel, root, mods):
    result = kernel.port().insert(mods("mod_b", needs=["a_fn", "b_fn", "printk"]))
    assert result.errno == E.ENOENT
    assert kernel.kmsg_texts() == ["mod_b: Unknown symbol a_fn (err -2)",
                                   "mod_b: Unknown symbol b_fn (err -2)"]
    assert not os.path.exists(root.sys_module("mod_b"))
    assert read(root, "/proc/modules") == ""


def test_weak_symbols_may_stay_unresolved(kernel, mods):
    assert kernel.port().insert(mods("mod_w", weak_needs=["maybe_there"])).ok


def test_users_hold_their_dependencies(kernel, root, mods):
    port = kernel.port()
    assert port.insert(mods("mod_a", exports=["a_fn"], export_crcs={"a_fn": 5})).ok
    assert port.insert(mods("mod_b", needs=["a_fn"], kernel_crcs={"a_fn": 5})).ok
    assert port.insert(mods("mod_c", needs=["a_fn"], kernel_crcs={"a_fn": 5})).ok
    assert read(root, "/sys/module/mod_a/refcnt") == "2\n"
    assert sorted(os.listdir(root.sys_module("mod_a", "holders"))) == ["mod_b", "mod_c"]
    assert os.readlink(root.sys_module("mod_a", "holders", "mod_b")) == "../../mod_b"
    assert read(root, "/proc/modules").splitlines() == [
        "mod_c 4096 0 - Live 0x0000000000000000",
        "mod_b 4096 0 - Live 0x0000000000000000",
        "mod_a 4096 2 mod_c,mod_b, Live 0x0000000000000000",
    ]


def test_a_second_load_is_eexist(kernel, mods):
    path = mods("mod_a")
    assert kernel.port().insert(path).ok
    assert kernel.port().insert(path).errno == E.EEXIST


def test_a_load_while_the_same_module_is_coming_is_ebusy(kernel, mods):
    path = mods("mod_a")
    kernel.port().insert(path)
    kernel.set_state("mod_a", "coming")
    assert kernel.port().insert(path).errno == E.EBUSY


def test_vermagic_mismatch_is_enoexec_with_both_strings(kernel, mods):
    magic = "5.10.0-1-amd64 SMP mod_unload "
    path = mods("mod_v", modinfo=standard_modinfo("mod_v", vermagic=magic))
    assert kernel.port().insert(path).errno == E.ENOEXEC
    assert kernel.kmsg_texts() == [
        f"mod_v: version magic '5.10.0-1-amd64 SMP mod_unload ' should be '{DEBIAN_VERMAGIC}'"]


def test_without_versions_a_modversions_kernel_force_loads_then_compares_all_of_vermagic(
        kernel, mods):
    magic = DEBIAN_VERMAGIC.replace("6.1.0-56-amd64", "6.1.0-99-amd64")
    path = mods("mod_n", modinfo=standard_modinfo("mod_n", vermagic=magic), layout_crc=None)
    assert kernel.port().insert(path).errno == E.ENOEXEC
    assert kernel.kmsg_texts() == [
        "mod_n: module_layout: kernel tainted.",
        f"mod_n: version magic '{magic}' should be '{DEBIAN_VERMAGIC}'"]


def test_with_modversions_only_the_release_part_of_vermagic_may_differ(kernel, mods):
    other_release = DEBIAN_VERMAGIC.replace("6.1.0-56-amd64", "6.1.0-99-amd64")
    assert kernel.port().insert(mods("mod_r", modinfo=standard_modinfo(
        "mod_r", vermagic=other_release))).ok


def test_force_vermagic_loads_and_taints_forced(kernel, root, mods):
    path = mods("mod_v", modinfo=standard_modinfo("mod_v", vermagic="5.10.0 SMP "))
    result = kernel.port().insert(path, force_vermagic=True)
    assert result.ok and result.flags == 2
    assert kernel.kmsg_texts()[-1] == "mod_v: bad vermagic: kernel tainted."
    assert read(root, "/proc/sys/kernel/tainted") == "2\n"
    assert read(root, "/sys/module/mod_v/taint") == "F\n"


def test_module_layout_crc_mismatch_is_enoexec(kernel, mods):
    assert kernel.port().insert(mods("mod_l", layout_crc=0xBAD)).errno == E.ENOEXEC
    assert kernel.kmsg_texts() == ["mod_l: disagrees about version of symbol module_layout"]


def test_a_symbol_crc_mismatch_is_einval(kernel, mods):
    path = mods("mod_s", needs=["printk"], kernel_crcs={"printk": 0x99})
    assert kernel.port().insert(path).errno == E.EINVAL
    assert kernel.kmsg_texts() == ["mod_s: disagrees about version of symbol printk",
                                   "mod_s: Unknown symbol printk (err -22)"]


def test_force_modversion_loads_past_crcs_and_taints(kernel, mods):
    path = mods("mod_s", needs=["printk"], kernel_crcs={"printk": 0x99}, layout_crc=0xBAD)
    assert kernel.port().insert(path, force_modversion=True).ok
    assert kernel.kmsg_texts() == ["mod_s: module_layout: kernel tainted."]


def test_symbol_of_a_module_still_coming_is_ebusy(kernel, mods):
    port = kernel.port()
    port.insert(mods("mod_a", exports=["a_fn"], export_crcs={"a_fn": 5}))
    kernel.set_state("mod_a", "coming")
    assert port.insert(mods("mod_b", needs=["a_fn"], kernel_crcs={"a_fn": 5})).errno == E.EBUSY
    assert kernel.kmsg_texts()[-2:] == ["mod_b: gave up waiting for init of module mod_a.",
                                       "mod_b: Unknown symbol a_fn (err -16)"]


def test_a_builtin_with_sysfs_makes_a_same_named_module_einval(root, mods):
    kernel = FakeKernel(root, kallsyms=KERNEL_CRCS, module_layout_crc=LAYOUT,
                        builtin_sysfs=["mod_a"], module_sig=False)
    assert kernel.port().insert(mods("mod_a")).errno == E.EINVAL
    assert kernel.kmsg_texts() == ["mod_a: module is already loaded"]


def test_exporting_a_symbol_the_kernel_has_is_enoexec(kernel, mods):
    path = mods("mod_d", exports=["kmalloc"], export_crcs={"kmalloc": 0x22})
    assert kernel.port().insert(path).errno == E.ENOEXEC
    assert kernel.kmsg_texts() == ["mod_d: exports duplicate symbol kmalloc (owned by kernel)"]


def test_parameters_are_checked_against_parmtype(kernel, root, mods):
    info = standard_modinfo("mod_p", "parmtype=debug:int", "parmtype=verbose:bool",
                            "parmtype=name:charp")
    path = mods("mod_p", modinfo=info)
    assert kernel.port().insert(path, "debug=0x10 verbose name=\"a b\" bogus=1").ok
    assert kernel.kmsg_texts() == ["mod_p: unknown parameter 'bogus' ignored"]
    assert SysModules(root).parameters("mod_p") == {"debug": "16", "verbose": "Y",
                                                    "name": "a b"}


def test_a_bad_parameter_value_is_einval(kernel, root, mods):
    path = mods("mod_p", modinfo=standard_modinfo("mod_p", "parmtype=debug:int"))
    assert kernel.port().insert(path, "debug=lots").errno == E.EINVAL
    assert kernel.kmsg_texts() == ["mod_p: `lots' invalid for parameter `debug'"]
    assert not os.path.exists(root.sys_module("mod_p"))


def test_an_init_error_is_returned_and_leaves_nothing_behind(root, mods):
    kernel = FakeKernel(root, module_layout_crc=LAYOUT, init_errors={"mod_a": E.ENODEV})
    assert kernel.port().insert(mods("mod_a")).errno == E.ENODEV
    assert not os.path.exists(root.sys_module("mod_a"))
    assert read(root, "/proc/modules") == ""


def test_blacklisted_and_disabled_modules_are_eperm(root, mods):
    kernel = FakeKernel(root, module_layout_crc=LAYOUT, module_blacklist=["mod_a"])
    assert kernel.port().insert(mods("mod_a")).errno == E.EPERM
    assert kernel.kmsg_texts() == ["Module mod_a is blacklisted"]
    off = FakeKernel(root, module_layout_crc=LAYOUT, modules_disabled=True)
    assert off.port().insert(mods("mod_b")).errno == E.EPERM


def test_scripted_errnos_come_first(root, mods):
    kernel = FakeKernel(root, module_layout_crc=LAYOUT, insert_errors={"mod_a": E.EKEYREJECTED})
    assert kernel.port().insert(mods("mod_a")).errno == E.EKEYREJECTED


def test_unsigned_modules_taint_e_once_and_are_rejected_when_enforced(root, mods):
    kernel = FakeKernel(root, module_layout_crc=LAYOUT)
    kernel.port().insert(mods("mod_a"))
    kernel.port().insert(mods("mod_b"))
    assert kernel.kmsg_texts() == ["mod_a: module verification failed: signature and/or "
                                   "required key missing - tainting kernel"]
    assert read(root, "/sys/module/mod_b/taint") == "E\n"
    strict = FakeKernel(root, module_layout_crc=LAYOUT, sig_enforce=True)
    assert strict.port().insert(mods("mod_c")).errno == E.EKEYREJECTED
    assert strict.kmsg_texts() == ["Loading of unsigned module is rejected"]


def test_a_module_signed_by_a_trusted_key_loads_untainted(tmp_path, root, mods):
    key = make_signing_key(str(tmp_path / "keys"), "/CN=trusted")
    with open(mods("mod_a"), "rb") as f:
        signed = tmp_path / "signed.ko"
        signed.write_bytes(sign_module(f.read(), key))
    kernel = FakeKernel(root, module_layout_crc=LAYOUT, trusted_signers=["trusted"],
                        sig_enforce=True)
    assert kernel.port().insert(str(signed)).ok
    assert read(root, "/sys/module/mod_a/taint") == "\n"


def test_out_of_tree_and_proprietary_modules_taint(kernel, root, mods):
    path = mods("mod_o", modinfo=standard_modinfo("mod_o", intree=False, license_="Proprietary"))
    assert kernel.port().insert(path).ok
    assert read(root, "/sys/module/mod_o/taint") == "PO\n"
    assert kernel.kmsg_texts()[:2] == ["mod_o: loading out-of-tree module taints kernel.",
                                       "mod_o: module license 'Proprietary' taints kernel."]
    assert read(root, "/proc/modules").endswith(" (PO)\n")


def test_compressed_module_is_decompressed_by_a_kernel_that_can(root, tmp_path, mods):
    kernel = FakeKernel(root, module_layout_crc=LAYOUT, compression="xz")
    xz = tmp_path / "mod_a.ko.xz"
    with open(mods("mod_a"), "rb") as f:
        xz.write_bytes(lzma.compress(f.read()))
    result = kernel.port().insert(str(xz))
    assert (result.ok, result.syscall, result.flags) == (True, "finit_module", 4)


def test_without_a_kernel_decompressor_user_space_decompresses(root, tmp_path, mods):
    kernel = FakeKernel(root, module_layout_crc=LAYOUT)
    xz = tmp_path / "mod_a.ko.xz"
    with open(mods("mod_a"), "rb") as f:
        xz.write_bytes(lzma.compress(f.read()))
    result = kernel.port().insert(str(xz))
    assert (result.ok, result.syscall) == (True, "init_module")


def test_not_elf_is_enoexec(kernel, tmp_path):
    junk = tmp_path / "junk.ko"
    junk.write_bytes(b"this is not an ELF file" * 4)
    assert kernel.port().insert(str(junk)).errno == E.ENOEXEC
    assert kernel.kmsg_texts() == ["Invalid ELF header magic: != \x7fELF"]


# --- delete_module -------------------------------------------------------------------------

def test_delete_removes_the_module_and_its_sysfs(kernel, root, mods):
    port = kernel.port()
    port.insert(mods("mod_a"))
    assert port.delete("mod_a") == 0
    assert not os.path.exists(root.sys_module("mod_a"))
    assert port.delete("mod_a") == E.ENOENT


def test_delete_with_holders_is_ewouldblock_even_forced(kernel, root, mods):
    port = kernel.port()
    port.insert(mods("mod_a", exports=["a_fn"], export_crcs={"a_fn": 5}))
    port.insert(mods("mod_b", needs=["a_fn"], kernel_crcs={"a_fn": 5}))
    assert port.delete("mod_a") == E.EWOULDBLOCK
    assert port.delete("mod_a", force=True) == E.EWOULDBLOCK
    assert port.delete("mod_b") == 0
    assert os.listdir(root.sys_module("mod_a", "holders")) == []
    assert read(root, "/sys/module/mod_a/refcnt") == "0\n"
    assert port.delete("mod_a") == 0


def test_references_block_removal_unless_forced_which_taints_r(kernel, root, mods):
    port = kernel.port()
    port.insert(mods("mod_a"))
    kernel.hold("mod_a")
    assert read(root, "/sys/module/mod_a/refcnt") == "1\n"
    assert port.delete("mod_a") == E.EWOULDBLOCK
    assert port.delete("mod_a", force=True) == 0
    assert int(read(root, "/proc/sys/kernel/tainted")) & 1 << 3


def test_released_references_let_the_module_go(kernel, root, mods):
    port = kernel.port()
    port.insert(mods("mod_a"))
    kernel.hold("mod_a", 2)
    kernel.release("mod_a")
    assert read(root, "/sys/module/mod_a/refcnt") == "1\n"
    kernel.release("mod_a")
    assert read(root, "/sys/module/mod_a/refcnt") == "0\n"
    assert port.delete("mod_a") == 0


def test_a_module_not_live_cannot_be_removed(kernel, mods):
    kernel.port().insert(mods("mod_a"))
    kernel.set_state("mod_a", "going")
    assert kernel.port().delete("mod_a") == E.EBUSY


def test_the_kernel_log_is_readable_like_dev_kmsg(kernel, root, mods):
    with DevKmsg(root).watch() as watch:
        kernel.port().insert(mods("mod_b", needs=["nowhere"]))
        records = watch.records()
    assert [(r.seq, r.level, r.text) for r in records] == [
        (0, 4, "mod_b: Unknown symbol nowhere (err -2)")]


def test_an_attempt_gives_explain_its_outcome_and_the_kernels_own_words(kernel, root, mods):
    """What `kmodctl explain` builds on: errno -> outcome, and the module's kmsg lines."""
    from kmodd.core.autoload.kmsg import module_lines, texts
    from kmodd.core.autoload.outcome import Cause, classify_insert

    kernel.port().insert(mods("other", needs=["nowhere"]))  # noise from another module
    with DevKmsg(root).watch() as watch:
        result = kernel.port().insert(mods("mod_b", needs=["a_fn"]))
        lines = module_lines(watch.records(), "mod_b")
    diagnosis = classify_insert(result.errno)
    assert diagnosis.cause is Cause.UNKNOWN_SYMBOL
    assert texts(lines) == ("mod_b: Unknown symbol a_fn (err -2)",)
