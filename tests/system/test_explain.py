"""`kmodctl explain`: every failure class produced on the simulated kernel, then explained.

Each test builds a small module tree (real ELF modules, indexed by depmod), sets the
simulated Linux 6.1 up so that a load fails in one way, makes the load (`attempt`, which
runs modprobe's plan and watches /dev/kmsg) and checks what the explanation says: the
finding for that class with its verdict, the evidence (file and line, symbols, values) and,
for the attempt, the errno mapped to its cause and the kernel's own lines quoted.
"""

from __future__ import annotations

import errno as E
import os
from collections.abc import Mapping
from typing import Any

import pytest

from kmodd.core.autoload.outcome import DECLINED_EXPLANATION
from kmodd.core.explain.model import Check, Evidence, Explanation, Finding, Verdict
from kmodd.core.explain.rules import DECLINED_FIX
from kmodd.system.attempt import attempt
from kmodd.system.diagnose import explain
from kmodd.system.kernel import LinuxKernel
from kmodd.system.root import Root
from tests.fakes import DEBIAN_RELEASE, DEBIAN_SIGNER, FakeKernel
from tests.kofixtures import (
    make_signing_key,
    module_tree,
    sign_module,
    standard_modinfo,
)

KVER = DEBIAN_RELEASE
MODDIR = f"/lib/modules/{KVER}"
LAYOUT = 0x7EAD1A70
PRINTK = 0x11112222
KALLSYMS = {"printk": PRINTK, "module_layout": LAYOUT}


def mod(name: str, **kw: Any) -> dict[str, Any]:
    """A module as Debian's build makes them: in-tree, vermagic, __versions for what it
    needs from the kernel (module_layout, printk)."""
    crcs = {"printk": PRINTK}
    crcs.update(kw.pop("kernel_crcs", {}))
    spec: dict[str, Any] = {"layout_crc": LAYOUT, "kernel_crcs": crcs,
                               "modinfo": standard_modinfo(name)}
    spec.update(kw)
    return spec


#: The kernel's own module the explanation compares vermagic and vmlinux CRCs with.
HELPER = {"kernel/lib/helper.ko": mod("helper", needs=["printk"])}


def tree(tmp_path, modules: Mapping[str, Mapping[str, object]],
         files: Mapping[str, str] | None = None) -> Root:
    return Root(module_tree(str(tmp_path / "root"), KVER, {**HELPER, **modules}, files))


def kernel_for(root: Root, **kw: object) -> FakeKernel:
    """The simulated kernel; without CONFIG_MODULE_SIG unless a test is about signatures
    (the test modules are unsigned, and Debian's kernel would log a taint line for them)."""
    kw.setdefault("kallsyms", KALLSYMS)
    kw.setdefault("module_layout_crc", LAYOUT)
    kw.setdefault("module_sig", False)
    return FakeKernel(root, **kw)  # type: ignore[arg-type]


def explained(kernel: FakeKernel, target: str, *, load: bool = False,
              options: str | None = None) -> Explanation:
    failure = None
    if load:
        failure = attempt(target, root=kernel.root, moddir=MODDIR, kernel=kernel.port(),
                          options=options, environ={"PATH": os.environ["PATH"]})
    return explain(target, root=kernel.root, moddir=MODDIR, kernel=kernel.port(),
                   failure=failure)


def only(expl: Explanation, check: Check, module: str | None = None) -> Finding:
    found = [f for f in expl.findings if f.check is check
             and (module is None or f.module == module)]
    assert len(found) == 1, (check, [(f.check, f.summary) for f in expl.findings])
    return found[0]


def none_of(expl: Explanation, check: Check) -> None:
    assert [f for f in expl.findings if f.check is check] == []


def texts(finding: Finding, label: str) -> list[str]:
    return [e.text for e in finding.evidence if e.label == label]


def the_attempt(expl: Explanation, errno_name: str) -> Finding:
    f = only(expl, Check.ATTEMPT)
    assert f.verdict is Verdict.PROBLEM
    assert texts(f, "errno")[0].startswith(f"{errno_name} (")
    return f


# --- unknown symbols ------------------------------------------------------------------------

def test_a_symbol_nothing_provides_is_named_and_the_kernels_line_quoted(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod(
        "mod_a", needs=["printk", "nowhere_fn"])}))
    expl = explained(kernel, "mod-a", load=True)
    attempt_ = the_attempt(expl, "ENOENT")
    assert texts(attempt_, "kernel log") == ["mod_a: Unknown symbol nowhere_fn (err -2)"]
    assert "needs a symbol that neither the kernel nor a loaded module exports" in \
        texts(attempt_, "cause")[0]
    symbols = only(expl, Check.SYMBOLS)
    assert symbols.verdict is Verdict.PROBLEM
    assert texts(symbols, "symbol") == [
        "nowhere_fn: nothing provides it (neither the running kernel nor any module of this "
        "kernel)"]


def test_a_symbol_of_a_module_missing_from_a_stale_index_names_that_module(tmp_path):
    """The module was rebuilt to use fat_fn after depmod ran: modules.dep does not list fat,
    so modprobe does not load it first; modules.symbols still knows fat exports it."""
    root = tree(tmp_path, {"kernel/fs/fat/fat.ko": mod("fat", exports=["fat_fn"]),
                           "kernel/fs/fat/vfat.ko": mod("vfat")})
    from tests.kofixtures import write_module

    path = root.path(f"{MODDIR}/kernel/fs/fat/vfat.ko")
    os.utime(root.path(f"{MODDIR}/modules.dep.bin"), (1, 1))  # the index is older
    write_module(os.path.dirname(path), "vfat", **mod("vfat", needs=["fat_fn"]))
    kernel = kernel_for(root)
    expl = explained(kernel, "vfat", load=True)
    assert texts(the_attempt(expl, "ENOENT"), "kernel log") == [
        "vfat: Unknown symbol fat_fn (err -2)"]
    symbols = only(expl, Check.SYMBOLS)
    assert (symbols.verdict, symbols.fix) == (Verdict.PROBLEM, "run depmod")
    assert texts(symbols, "symbol") == [
        "fat_fn: provided by fat, which is not among its dependencies in modules.dep"]
    index = only(expl, Check.INDEX)
    assert index.verdict is Verdict.WARNING
    assert index.summary.startswith("the index is older than 3 module file(s)")


def test_a_symbol_of_a_dependency_is_fine_because_modprobe_loads_it_first(tmp_path):
    kernel = kernel_for(tree(tmp_path, {
        "kernel/fs/fat/fat.ko": mod("fat", exports=["fat_fn"]),
        "kernel/fs/fat/vfat.ko": mod("vfat", needs=["fat_fn"])}))
    expl = explained(kernel, "vfat")
    symbols = only(expl, Check.SYMBOLS)
    assert symbols.verdict is Verdict.OK
    assert symbols.summary == ("all 2 symbols it needs are there: 1 from the kernel, 0 from "
                               "loaded modules, 1 from dependencies modprobe loads first")
    assert texts(symbols, "symbol") == ["fat_fn: provided by fat (a dependency, loaded first)"]
    assert only(expl, Check.DEPENDENCIES).summary == \
        "modprobe loads its dependencies first: fat (not loaded)"
    assert expl.verdict is Verdict.OK


# --- vermagic and symbol versions -------------------------------------------------------------

def test_vermagic_of_another_build_is_enoexec_with_both_strings(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": {
        **mod("mod_a"), "modinfo": standard_modinfo("mod_a", vermagic=f"{KVER} SMP mod_unload ")}}))
    expl = explained(kernel, "mod-a", load=True)
    assert texts(the_attempt(expl, "ENOEXEC"), "kernel log") == [
        f"mod_a: version magic '{KVER} SMP mod_unload ' should be "
        f"'{KVER} SMP preempt mod_unload modversions '"]
    vermagic = only(expl, Check.VERMAGIC)
    assert vermagic.verdict is Verdict.PROBLEM
    assert vermagic.evidence == (
        Evidence("module vermagic", f"{KVER} SMP mod_unload ",
                 f"{MODDIR}/kernel/drivers/a/mod-a.ko"),
        Evidence("running kernel", KVER, "/proc/sys/kernel/osrelease"),
        Evidence("kernel vermagic flags", "SMP preempt mod_unload modversions",
                 f"{MODDIR}/kernel/lib/helper.ko"))


def test_another_release_with_symbol_versions_is_allowed_and_only_warned_about(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": {
        **mod("mod_a"), "modinfo": standard_modinfo(
            "mod_a", vermagic="6.1.0-99-amd64 SMP preempt mod_unload modversions ")}}))
    expl = explained(kernel, "mod-a", load=True)
    none_of(expl, Check.ATTEMPT)  # it loaded
    assert only(expl, Check.VERMAGIC).verdict is Verdict.WARNING
    assert only(expl, Check.STATE).summary == "already loaded"


def test_a_symbol_crc_of_another_kernel_build_is_einval_and_both_crcs_shown(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod(
        "mod_a", needs=["printk"], kernel_crcs={"printk": 0x99990000})}))
    expl = explained(kernel, "mod-a", load=True)
    assert texts(the_attempt(expl, "EINVAL"), "kernel log") == [
        "mod_a: disagrees about version of symbol printk",
        "mod_a: Unknown symbol printk (err -22)"]
    crcs = only(expl, Check.MODVERSIONS)
    assert crcs.verdict is Verdict.PROBLEM
    assert crcs.evidence == (Evidence(
        "symbol", "printk: module has 0x99990000, vmlinux has 0x11112222",
        f"the __versions of the kernel's own modules in {MODDIR} (1 read)"),)


def test_vmlinux_crcs_come_from_an_installed_module_symvers_first(tmp_path):
    root = tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod(
        "mod_a", needs=["printk"], kernel_crcs={"printk": 0x99990000})}, {
        f"{MODDIR}/build/Module.symvers":
            f"0x{PRINTK:08x}\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n"
            f"0x{LAYOUT:08x}\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n"})
    crcs = only(explained(kernel_for(root), "mod-a"), Check.MODVERSIONS)
    assert crcs.evidence[0].path == f"{MODDIR}/build/Module.symvers"


def test_a_crc_a_provider_module_disagrees_with_names_the_providers_file(tmp_path):
    kernel = kernel_for(tree(tmp_path, {
        "kernel/fs/fat/fat.ko": mod("fat", exports=["fat_fn"], export_crcs={"fat_fn": 0x1234}),
        "kernel/fs/fat/vfat.ko": mod("vfat", needs=["fat_fn"],
                                     kernel_crcs={"fat_fn": 0x4321})}))
    expl = explained(kernel, "vfat", load=True)
    assert texts(the_attempt(expl, "EINVAL"), "kernel log") == [
        "vfat: disagrees about version of symbol fat_fn",
        "vfat: Unknown symbol fat_fn (err -22)"]
    assert only(expl, Check.MODVERSIONS).evidence == (Evidence(
        "symbol", "fat_fn: module has 0x00004321, fat has 0x00001234",
        f"{MODDIR}/kernel/fs/fat/fat.ko"),)


# --- signatures ---------------------------------------------------------------------------------

def test_an_unsigned_module_under_sig_enforce_is_ekeyrejected(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}),
                        sig_enforce=True, module_sig=True)
    expl = explained(kernel, "mod-a", load=True)
    assert texts(the_attempt(expl, "EKEYREJECTED"), "kernel log") == [
        "Loading of unsigned module is rejected"]
    sig = only(expl, Check.SIGNATURE)
    assert sig.verdict is Verdict.PROBLEM
    assert sig.summary == ("unsigned, and signatures are enforced: the kernel refuses it "
                           "(EKEYREJECTED)")
    assert Evidence("sig_enforce", "Y", "/sys/module/module/parameters/sig_enforce") in \
        sig.evidence


def test_only_the_modules_and_the_loaders_own_lines_are_quoted(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod(
        "mod_a", needs=["nowhere_fn"])}), module_sig=True)
    other = kernel.root.path(f"{MODDIR}/kernel/lib/helper.ko")

    class Noisy:  # another driver logs while the attempt runs
        def __init__(self) -> None:
            self.port = kernel.port()
            self.modules = self.port.modules

        def insert(self, path, options="", **kw):
            from kmodd.core.priority import Priority

            kernel._log(Priority.INFO, "e1000e 0000:00:03.0 eth0: NIC Link is Up")
            return self.port.insert(path, options, **kw)

        def delete(self, name, *, force=False):
            return self.port.delete(name, force=force)

    assert os.path.exists(other)
    failure = attempt("mod-a", root=kernel.root, moddir=MODDIR, kernel=Noisy(), environ={})
    expl = explain("mod-a", root=kernel.root, moddir=MODDIR, kernel=kernel.port(),
                   failure=failure)
    assert texts(the_attempt(expl, "ENOENT"), "kernel log") == [
        "mod_a: module verification failed: signature and/or required key missing - "
        "tainting kernel",
        "mod_a: Unknown symbol nowhere_fn (err -2)"]


@pytest.fixture(scope="module")
def test_key(tmp_path_factory):
    return make_signing_key(str(tmp_path_factory.mktemp("keys")))


def signed_tree(tmp_path, key) -> Root:
    root = tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")})
    path = root.path(f"{MODDIR}/kernel/drivers/a/mod-a.ko")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(sign_module(data, key))
    return root


def test_a_module_signed_by_a_key_the_kernel_lacks_is_rejected_when_enforced(tmp_path, test_key):
    kernel = kernel_for(signed_tree(tmp_path, test_key), sig_enforce=True, module_sig=True)
    expl = explained(kernel, "mod-a", load=True)
    assert texts(the_attempt(expl, "EKEYREJECTED"), "kernel log") == [
        "Loading of module with unavailable key is rejected"]
    sig = only(expl, Check.SIGNATURE)
    assert (sig.verdict, sig.summary) == (
        Verdict.PROBLEM, "signed by 'kmodd test key', a key the kernel does not hold, and "
                         "signatures are enforced: the kernel refuses it (EKEYREJECTED)")
    assert [t.split(": ")[0] for t in texts(sig, "kernel key")] == [DEBIAN_SIGNER]
    assert [e.where() for e in sig.evidence if e.label == "kernel key"] == ["/proc/keys:2"]
    assert texts(sig, "signer") == [f"kmodd test key (key {test_key.serial:x}, sha256)"]


def test_a_module_signed_by_a_key_the_kernel_holds_is_ok(tmp_path, test_key):
    trusted = {"sig_enforce": True, "module_sig": True, "trusted_signers": ["kmodd test key"]}
    before = explained(kernel_for(signed_tree(tmp_path, test_key), **trusted), "mod-a")
    assert only(before, Check.SIGNATURE).summary == \
        "signed by 'kmodd test key', a key the kernel holds"
    kernel = kernel_for(signed_tree(tmp_path / "again", test_key), **trusted)
    expl = explained(kernel, "mod-a", load=True)
    none_of(expl, Check.ATTEMPT)
    none_of(expl, Check.SIGNATURE)  # loaded: nothing left to check


def test_lockdown_refuses_an_unsigned_module_with_eperm(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}),
                        lockdown="integrity", module_sig=True)
    expl = explained(kernel, "mod-a", load=True)
    assert texts(the_attempt(expl, "EPERM"), "kernel log") == [
        "Lockdown: modprobe: unsigned module loading is restricted; see man kernel_lockdown.7"]
    assert only(expl, Check.SIGNATURE).summary == (
        "unsigned, and the kernel is locked down (integrity): it refuses it (EPERM)")


# --- the kernel's own switches ---------------------------------------------------------------

def test_module_blacklist_on_the_kernel_command_line_is_eperm(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}),
                        module_blacklist=["mod_a"])
    expl = explained(kernel, "mod-a", load=True)
    assert texts(the_attempt(expl, "EPERM"), "kernel log") == ["Module mod_a is blacklisted"]
    f = only(expl, Check.KERNEL_BLACKLIST)
    assert f.verdict is Verdict.PROBLEM
    assert f.evidence == (Evidence(
        "kernel command line",
        f"BOOT_IMAGE=/boot/vmlinuz-{KVER} root=/dev/vda ro module_blacklist=mod_a",
        "/proc/cmdline"),)


def test_modules_disabled_is_eperm_for_everything(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}),
                        modules_disabled=True)
    expl = explained(kernel, "mod-a", load=True)
    the_attempt(expl, "EPERM")
    f = only(expl, Check.MODULES_DISABLED)
    assert f.evidence == (Evidence("value", "1", "/proc/sys/kernel/modules_disabled"),)


# --- modprobe.d -------------------------------------------------------------------------------

def test_a_blacklist_stops_the_alias_and_is_shown_with_file_and_line(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/pcspkr.ko": {
        **mod("pcspkr"), "modinfo": standard_modinfo("pcspkr", "alias=platform:pcspkr")}}, {
        "etc/modprobe.d/blacklist.conf": "# no beeps\n\nblacklist pcspkr\n"}))
    expl = explained(kernel, "platform:pcspkr", load=True)
    none_of(expl, Check.ATTEMPT)  # modprobe says nothing and exits 0
    assert kernel.calls == []
    f = only(expl, Check.BLACKLIST)
    assert f.verdict is Verdict.PROBLEM
    assert f.evidence == (Evidence("line", "blacklist pcspkr", "/etc/modprobe.d/blacklist.conf",
                                   3),)
    by_name = only(explained(kernel, "pcspkr"), Check.BLACKLIST)
    assert by_name.verdict is Verdict.WARNING
    assert "'modprobe pcspkr' by name still loads it" in by_name.summary


def test_modprobe_blacklist_on_the_command_line_points_at_proc_cmdline(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}),
                        cmdline="quiet modprobe.blacklist=mod_a")
    f = only(explained(kernel, "mod_a"), Check.BLACKLIST)
    assert f.evidence == (Evidence("line", "blacklist mod_a", "/proc/cmdline"),)


def test_an_install_command_that_fails_replaces_the_load(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}, {
        "etc/modprobe.d/disable.conf": "options mod_a x=1\ninstall mod_a /bin/false\n"}))
    expl = explained(kernel, "mod-a", load=True)
    attempt_ = the_attempt(expl, "EINVAL")
    assert texts(attempt_, "failed at") == ["install command"]
    assert texts(attempt_, "kmod's message") == [
        "Error running install command '/bin/false' for module mod_a: retcode 1"]
    f = only(expl, Check.INSTALL)
    assert f.verdict is Verdict.PROBLEM
    assert f.evidence == (Evidence("install", "install mod_a /bin/false",
                                   "/etc/modprobe.d/disable.conf", 2),)
    assert kernel.calls == []


def test_install_true_reports_success_and_loads_nothing(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}, {
        "etc/modprobe.d/disable.conf": "install mod_a /bin/true\n"}))
    expl = explained(kernel, "mod-a", load=True)
    none_of(expl, Check.ATTEMPT)
    assert only(expl, Check.INSTALL).summary == (
        "'/bin/true' runs instead of loading it: modprobe reports success and nothing is "
        "loaded")
    assert only(expl, Check.STATE).summary == "not loaded"


def test_a_softdep_silently_disables_the_install_command(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/fs/ksmbd.ko": mod("ksmbd"),
                                        "kernel/crypto/md4.ko": mod("md4")}, {
        "etc/modprobe.d/ksmbd.conf": "install ksmbd /bin/false\n",
        "etc/modprobe.d/ksmbd-softdep.conf": "softdep ksmbd pre: md4\n"}))
    expl = explained(kernel, "ksmbd", load=True)
    none_of(expl, Check.ATTEMPT)
    assert {m.name for m in kernel.loaded} == {"ksmbd", "md4"}
    f = only(expl, Check.SOFTDEP)
    assert f.verdict is Verdict.WARNING
    assert f.evidence == (
        Evidence("install", "install ksmbd /bin/false", "/etc/modprobe.d/ksmbd.conf", 1),
        Evidence("softdep", "softdep ksmbd pre: md4", "/etc/modprobe.d/ksmbd-softdep.conf", 1))
    none_of(expl, Check.INSTALL)


def test_a_bad_option_value_is_einval_with_the_kernels_line_and_the_config_line(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": {
        **mod("mod_a"), "modinfo": standard_modinfo("mod_a", "parmtype=heartbeat:int")}}, {
        "etc/modprobe.d/wd.conf": "options mod_a heartbeat=notanumber bogus=1\n"}))
    expl = explained(kernel, "mod-a", load=True)
    assert texts(the_attempt(expl, "EINVAL"), "kernel log") == [
        "mod_a: `notanumber' invalid for parameter `heartbeat'",
        "mod_a: unknown parameter 'bogus' ignored"]
    bad = [f for f in expl.findings if f.check is Check.OPTIONS]
    assert [(f.verdict, f.evidence) for f in bad] == [
        (Verdict.PROBLEM, (Evidence(
            "invalid value", "heartbeat=notanumber: not a number in the range of int "
            "(-2147483648..2147483647) (parmtype int)", "/etc/modprobe.d/wd.conf", 1),)),
        (Verdict.WARNING, (Evidence("unknown parameter", "bogus=1",
                                    "/etc/modprobe.d/wd.conf", 1),))]


def test_options_given_with_the_attempt_are_checked_too(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": {
        **mod("mod_a"), "modinfo": standard_modinfo("mod_a", "parmtype=on:bool")}}))
    expl = explained(kernel, "mod-a", load=True, options="on=maybe")
    assert texts(the_attempt(expl, "EINVAL"), "options") == ["on=maybe"]
    assert only(expl, Check.OPTIONS).evidence == (Evidence(
        "invalid value", "on=maybe: not a boolean (y, n, 1, 0, on, off) (parmtype bool)"),)


# --- the index and the files ------------------------------------------------------------------

def test_a_module_file_not_yet_indexed_says_run_depmod(tmp_path):
    root = tree(tmp_path, {})
    from tests.kofixtures import write_module

    write_module(root.path(f"{MODDIR}/updates"), "newmod", **mod("newmod"))
    expl = explained(kernel_for(root), "newmod")
    f = only(expl, Check.NOT_FOUND)
    assert (f.verdict, f.fix) == (Verdict.PROBLEM, "run depmod (the index is older than the file)")
    assert texts(f, "not indexed") == ["a file of that name is not in modules.dep"]
    assert only(expl, Check.INDEX).verdict is Verdict.PROBLEM


def test_a_module_only_another_kernel_has_is_not_found_for_this_one(tmp_path):
    root = tree(tmp_path, {})
    module_tree(root.prefix, "6.1.0-13-amd64", {"kernel/net/wg/wireguard.ko": mod("wireguard")})
    expl = explained(kernel_for(root), "wireguard")
    f = only(expl, Check.NOT_FOUND)
    assert f.summary == f"no module, alias or builtin named 'wireguard' for kernel {KVER}"
    assert f.evidence[-1] == Evidence("other kernel", "6.1.0-13-amd64 has it",
                                      "/lib/modules/6.1.0-13-amd64/kernel/net/wg/wireguard.ko")
    assert f.fix == f"the module exists for other kernels only: install it for {KVER}"


def test_a_missing_module_directory_points_at_the_upgrade_without_reboot(tmp_path):
    root = Root(str(tmp_path / "root"))
    module_tree(root.prefix, "6.1.0-99-amd64", {"kernel/a/mod-a.ko": mod("mod_a")})
    expl = explained(kernel_for(root), "mod-a")
    f = only(expl, Check.NOT_FOUND)
    assert f.evidence[0] == Evidence("module directory", "does not exist", MODDIR)
    assert f.fix is not None
    assert f.fix.startswith(f"install the modules of {KVER} (a kernel upgrade without a reboot")


def test_a_missing_module_file_is_enoent_and_said_to_be_missing(tmp_path):
    root = tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")})
    os.unlink(root.path(f"{MODDIR}/kernel/drivers/a/mod-a.ko"))
    expl = explained(kernel_for(root), "mod-a", load=True)
    assert texts(the_attempt(expl, "ENOENT"), "failed at") == ["open"]
    assert only(expl, Check.FILE).evidence == (
        Evidence("missing", f"{MODDIR}/kernel/drivers/a/mod-a.ko",
                 f"{MODDIR}/kernel/drivers/a/mod-a.ko"),)


def test_a_dependency_whose_file_is_gone_makes_kmod_drop_every_dependency(tmp_path):
    root = tree(tmp_path, {"kernel/fs/fat/fat.ko": mod("fat", exports=["fat_fn"]),
                           "kernel/fs/fat/vfat.ko": mod("vfat", needs=["fat_fn"])})
    os.unlink(root.path(f"{MODDIR}/kernel/fs/fat/fat.ko"))
    expl = explained(kernel_for(root), "vfat", load=True)
    assert texts(the_attempt(expl, "ENOENT"), "kernel log") == [
        "vfat: Unknown symbol fat_fn (err -2)"]
    f = only(expl, Check.DEPENDENCIES)
    assert f.evidence == (Evidence(
        "error", f"ctx=(ctx) path={MODDIR}/kernel/fs/fat/fat.ko error=No such file or "
                 "directory"),)


# --- state --------------------------------------------------------------------------------

def test_an_already_loaded_module_says_so(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}))
    kernel.port().insert(kernel.root.path(f"{MODDIR}/kernel/drivers/a/mod-a.ko"))
    expl = explained(kernel, "mod-a")
    assert only(expl, Check.STATE).evidence == (
        Evidence("initstate", "live", "/sys/module/mod_a/initstate"),)
    assert expl.verdict is Verdict.OK


def test_a_builtin_module_has_nothing_to_load(tmp_path):
    kernel = kernel_for(tree(tmp_path, {}, {
        f"{MODDIR}/modules.builtin": "kernel/fs/ext4/ext4.ko\n"}))
    expl = explained(kernel, "ext4", load=True)
    none_of(expl, Check.ATTEMPT)
    f = only(expl, Check.STATE)
    assert (f.verdict, f.evidence) == (
        Verdict.OK, (Evidence("index", "listed in modules.builtin"),))
    assert expl.verdict is Verdict.OK


@pytest.mark.parametrize(("errno", "name"), [(E.ENODEV, "ENODEV"), (E.EBUSY, "EBUSY")])
def test_an_init_function_that_fails_is_quoted_with_its_own_line(tmp_path, errno, name):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}),
                        init_errors={"mod_a": errno}, init_log={"mod_a": "no device found"})
    expl = explained(kernel, "mod-a", load=True)
    f = the_attempt(expl, name)
    assert texts(f, "kernel log") == ["mod_a: no device found"]
    assert texts(f, "failed at") == ["finit_module"]


def test_an_init_that_answers_eexist_and_leaves_nothing_loaded_is_a_decline(tmp_path):
    """modprobe stays silent (EEXIST counts as loaded); the explanation says what happened."""
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/cpufreq/pcc-cpufreq.ko":
                                        mod("pcc_cpufreq")}),
                        init_errors={"pcc_cpufreq": E.EEXIST})
    f = the_attempt(explained(kernel, "pcc_cpufreq", load=True), "EEXIST")
    assert (f.summary, texts(f, "cause"), f.fix) == (
        "the load failed with EEXIST: declined", [DECLINED_EXPLANATION], DECLINED_FIX)
    assert kernel.module("pcc_cpufreq") is None


class _AnotherProgramFirst:
    """Syscalls where another program's insert of the same file lands just before ours."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel

    def finit_module(self, fd: int, params: bytes, flags: int) -> int:
        assert self.kernel.finit_module(fd, params, flags) == 0
        os.lseek(fd, 0, os.SEEK_SET)
        return self.kernel.finit_module(fd, params, flags)

    def init_module(self, image: bytes, params: bytes) -> int:
        return self.kernel.init_module(image, params)

    def delete_module(self, name: bytes, flags: int) -> int:
        return self.kernel.delete_module(name, flags)


def test_eexist_for_a_module_another_program_loaded_meanwhile_is_no_failure(tmp_path):
    kernel = kernel_for(tree(tmp_path, {"kernel/drivers/a/mod-a.ko": mod("mod_a")}))
    port = LinuxKernel(kernel.root, syscalls=_AnotherProgramFirst(kernel))
    assert attempt("mod_a", root=kernel.root, moddir=MODDIR, kernel=port,
                   environ={"PATH": os.environ["PATH"]}) is None
    assert [call for call in kernel.calls if call[0] == "finit_module"] == [
        ("finit_module", "mod_a"), ("finit_module", "mod_a")]


def test_a_dependency_that_fails_is_named_as_the_failing_step(tmp_path):
    kernel = kernel_for(tree(tmp_path, {
        "kernel/fs/fat/fat.ko": mod("fat", exports=["fat_fn"]),
        "kernel/fs/fat/vfat.ko": mod("vfat", needs=["fat_fn"])}), init_errors={"fat": E.ENOMEM})
    f = the_attempt(explained(kernel, "vfat", load=True), "ENOMEM")
    assert f.summary == "the load failed with ENOMEM (while loading fat): no-memory"
    assert f.module == "vfat"


def test_the_plan_is_modprobes_steps_with_loaded_ones_skipped(tmp_path):
    kernel = kernel_for(tree(tmp_path, {
        "kernel/fs/fat/fat.ko": mod("fat", exports=["fat_fn"]),
        "kernel/fs/fat/vfat.ko": mod("vfat", needs=["fat_fn"])}, {
        "etc/modprobe.d/o.conf": "options vfat utf8=1\n"}))
    assert only(explained(kernel, "vfat"), Check.PLAN).evidence == (
        Evidence("step", f"insmod {MODDIR}/kernel/fs/fat/fat.ko"),
        Evidence("step", f"insmod {MODDIR}/kernel/fs/fat/vfat.ko utf8=1"))
    kernel.port().insert(kernel.root.path(f"{MODDIR}/kernel/fs/fat/fat.ko"))
    assert only(explained(kernel, "vfat"), Check.PLAN).evidence == (
        Evidence("step", "skip fat (already loaded)"),
        Evidence("step", f"insmod {MODDIR}/kernel/fs/fat/vfat.ko utf8=1"))
