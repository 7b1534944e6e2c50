"""The checks of a module file against the running kernel: vermagic, symbols, CRCs, signature.

Part of the checklist `kmodd.core.explain.rules` walks: whether the kernel will accept the
file itself (its version magic and build flags, every symbol it needs and who provides it,
the CRC of each against its exporter's, and its signature against `sig_enforce`, lockdown
and the keys the kernel holds). Each rule reads facts only.
"""

from __future__ import annotations

from kmodd.core.explain.facts import KernelFacts, ModuleFacts, SymbolFacts
from kmodd.core.explain.model import Check, Evidence, Finding, Verdict
from kmodd.core.kmod.kernelview import VMLINUX, vermagic_parts

#: At most this many symbols are listed as evidence per finding.
SYMBOL_EVIDENCE_MAX = 30
#: Lockdown modes that refuse unsigned modules (security_locked_down(LOCKDOWN_MODULE_SIGNATURE)).
LOCKDOWN_REFUSES = frozenset({"integrity", "confidentiality"})


def loaded(m: ModuleFacts) -> bool:
    """Built in or live: nothing left for the kernel to accept."""
    return m.builtin or m.state == "live"


def vermagic(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
    if not m.modinfo_read or m.builtin:
        return []
    if m.vermagic is None:
        return [_forced(m, kernel, Check.VERMAGIC, "the module has no vermagic",
                        "bad vermagic")]
    release, flags = vermagic_parts(m.vermagic)
    ev = [Evidence("module vermagic", m.vermagic, m.path),
          Evidence("running kernel", kernel.release, kernel.release_source)]
    kernel_flags = None
    if kernel.vermagic is not None:
        kernel_flags = vermagic_parts(kernel.vermagic)[1]
        ev.append(Evidence("kernel vermagic flags", kernel_flags.strip(), kernel.vermagic_source))
    if kernel_flags is not None and flags.strip() != kernel_flags.strip():
        return [Finding(Check.VERMAGIC, Verdict.PROBLEM,
                        "built for a kernel with other options (vermagic flags differ): the "
                        "kernel refuses it with ENOEXEC ('version magic ... should be ...')",
                        m.name, tuple(ev), "rebuild the module for the running kernel")]
    if release != kernel.release:
        if m.has_versions:
            return [Finding(Check.VERMAGIC, Verdict.WARNING,
                            f"built for {release}, running {kernel.release}: allowed because "
                            "the module carries symbol versions, which then must all match "
                            "(see modversions)", m.name, tuple(ev))]
        return [Finding(Check.VERMAGIC, Verdict.PROBLEM,
                        f"built for {release}, running {kernel.release}: the kernel refuses it "
                        "with ENOEXEC", m.name, tuple(ev),
                        "install the module built for the running kernel")]
    if kernel_flags is None:
        return [Finding(Check.VERMAGIC, Verdict.OK, "built for the running kernel's release "
                        "(its flags could not be compared: no kernel module to compare with)",
                        m.name, tuple(ev))]
    return [Finding(Check.VERMAGIC, Verdict.OK, "vermagic matches the running kernel", m.name,
                    tuple(ev))]


def _forced(m: ModuleFacts, kernel: KernelFacts, check: Check, what: str,
            kernel_says: str) -> Finding:
    """A check the kernel passes only by force-loading (try_to_force_load)."""
    ev = (Evidence("CONFIG_MODULE_FORCE_LOAD", {True: "y", False: "n", None: "unknown"}[
        kernel.force_load], kernel.config_source),)
    if kernel.force_load:
        return Finding(check, Verdict.WARNING,
                       f"{what}: the kernel loads it anyway and taints itself (F), logging "
                       f"'{m.name}: {kernel_says}: kernel tainted.'", m.name, ev,
                       "rebuild the module against the running kernel's build")
    verdict = Verdict.PROBLEM if kernel.force_load is False else Verdict.WARNING
    return Finding(check, verdict,
                   f"{what}: the kernel refuses it (ENOEXEC) unless it was built with "
                   "CONFIG_MODULE_FORCE_LOAD (then it loads and taints the kernel)", m.name, ev,
                   "rebuild the module against the running kernel's build")


def _symbol_line(s: SymbolFacts) -> Evidence:
    if s.providers:
        mods = ", ".join(s.providers)
        if s.provider_in_deps:
            return Evidence("symbol", f"{s.name}: provided by {mods} (a dependency, loaded "
                                      "first)")
        return Evidence("symbol", f"{s.name}: provided by {mods}, which is not among its "
                                  "dependencies in modules.dep")
    return Evidence("symbol", f"{s.name}: nothing provides it (neither the running kernel nor "
                              "any module of this kernel)")


def symbols(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
    if not m.modinfo_read or m.builtin or loaded(m):
        return []
    strong = [s for s in m.symbols if not s.weak]
    if kernel.kallsyms is None:
        missing = [s for s in strong if not s.providers]
        ev = [Evidence("symbol", f"{s.name}: no module provides it (the kernel may)")
              if not s.providers else _symbol_line(s)
              for s in strong if not s.provider_in_deps]
        note = Evidence("kernel symbols", "/proc/kallsyms is unreadable: symbols the kernel "
                                          "itself exports could not be checked")
        if not ev:
            return [Finding(Check.SYMBOLS, Verdict.INFO, "symbols not checked", m.name, (note,))]
        return [Finding(Check.SYMBOLS, Verdict.INFO,
                        f"{len(missing)} symbol(s) no module provides; the kernel may",
                        m.name, (note, *ev[:SYMBOL_EVIDENCE_MAX]))]
    unresolved = [s for s in strong if s.owner is None]
    failing = [s for s in unresolved if not s.provider_in_deps]
    by_deps = [s for s in unresolved if s.provider_in_deps]
    if failing:
        ev = [_symbol_line(s) for s in failing[:SYMBOL_EVIDENCE_MAX]]
        fix = ("run depmod" if any(s.providers for s in failing) else
               "load (or install) the module that provides them first, or get the module "
               "built for this kernel")
        return [Finding(Check.SYMBOLS, Verdict.PROBLEM,
                        f"{len(failing)} symbol(s) it needs will not be there: the load fails "
                        "with ENOENT ('Unknown symbol')", m.name, tuple(ev), fix)]
    by_kernel = sum(1 for s in strong if s.owner == VMLINUX)
    by_modules = sum(1 for s in strong if s.owner not in (None, VMLINUX))
    summary = (f"all {len(strong)} symbols it needs are there: {by_kernel} from the kernel, "
               f"{by_modules} from loaded modules, {len(by_deps)} from dependencies modprobe "
               "loads first") if strong else "it needs no symbols"
    listed = tuple(_symbol_line(s) for s in by_deps[:SYMBOL_EVIDENCE_MAX])
    if not kernel.kallsyms.precise:
        listed += (Evidence("kernel symbols", "kallsyms does not mark exports here: any global "
                                          "kernel symbol was counted as available"),)
    return [Finding(Check.SYMBOLS, Verdict.OK, summary, m.name, listed)]


def modversions(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
    if not m.modinfo_read or m.builtin or loaded(m):
        return []
    kernel_uses = kernel.vermagic is not None and "modversions" in kernel.vermagic.split()
    if not m.has_versions:
        if kernel_uses:
            return [_forced(m, kernel, Check.MODVERSIONS,
                            "the module has no symbol versions but the kernel checks them",
                            "module_layout")]
        return []
    checked = [s for s in m.symbols if s.crc is not None and s.expected_crc is not None]
    wrong = [s for s in checked if s.crc != s.expected_crc]
    unchecked = sum(1 for s in m.symbols if s.crc is not None and s.expected_crc is None)
    sources = sorted({s.crc_source for s in checked if s.crc_source})
    if wrong:
        ev = tuple(Evidence("symbol", f"{s.name}: module has 0x{s.crc:08x}, "
                                      f"{s.owner or (s.providers[0] if s.providers else '?')} "
                                      f"has 0x{s.expected_crc:08x}", s.crc_source)
                   for s in wrong[:SYMBOL_EVIDENCE_MAX] if s.crc is not None
                   and s.expected_crc is not None)
        return [Finding(Check.MODVERSIONS, Verdict.PROBLEM,
                        f"disagrees about the version of {len(wrong)} symbol(s): the kernel "
                        "refuses it (EINVAL, or ENOEXEC for module_layout)", m.name, ev,
                        "rebuild the module against this kernel (or its provider's) build")]
    if not checked:
        return [Finding(Check.MODVERSIONS, Verdict.INFO,
                        f"{unchecked} symbol CRC(s) could not be checked: no record of the "
                        "exporters' CRCs was found", m.name)]
    note = f"; {unchecked} not checked (no record of their CRC)" if unchecked else ""
    return [Finding(Check.MODVERSIONS, Verdict.OK,
                    f"the CRCs of {len(checked)} symbol(s) match{note}", m.name,
                    tuple(Evidence("CRCs from", s) for s in sources))]


def signature(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
    sig = m.signature
    if sig is None or m.builtin or loaded(m):
        return []
    enforce_ev = Evidence("sig_enforce", {True: "Y", False: "N", None: "(absent)"}[
        kernel.sig_enforce], "/sys/module/module/parameters/sig_enforce")
    lock_ev = Evidence("lockdown", kernel.lockdown or "(no lockdown)",
                       "/sys/kernel/security/lockdown")
    if kernel.sig_enforce is None and kernel.lockdown in (None, "none"):
        return [Finding(Check.SIGNATURE, Verdict.INFO,
                        "this kernel does not check module signatures", m.name,
                        (enforce_ev, lock_ev))]
    if sig.error:
        return [Finding(Check.SIGNATURE, Verdict.PROBLEM,
                        "the signature cannot be read: the kernel refuses it (EBADMSG)", m.name,
                        (Evidence("signature", sig.error, m.path),), "re-sign the module")]
    ev: list[Evidence] = [enforce_ev, lock_ev]
    known = None
    if sig.signed:
        ev.insert(0, Evidence("signer", f"{sig.signer} (key {sig.key_id}, {sig.hash_algo})",
                              m.path))
        if kernel.keyrings is not None:
            keys = kernel.keyrings.keys
            known = any(k.name == sig.signer for k in keys)
            ev += [Evidence("kernel key", f"{k.name}: {k.key_id}", "/proc/keys", k.line)
                   for k in keys]
        else:
            ev.append(Evidence("kernel keys", "/proc/keys is unreadable"))
    else:
        ev.insert(0, Evidence("signature", sig.note or "unsigned", m.path))
    if sig.signed and known:
        return [Finding(Check.SIGNATURE, Verdict.OK,
                        f"signed by '{sig.signer}', a key the kernel holds", m.name, tuple(ev))]
    what = "unsigned" if not sig.signed else (
        f"signed by '{sig.signer}', a key the kernel does not hold" if known is False else
        f"signed by '{sig.signer}' (whether the kernel holds the key is unknown)")
    if kernel.sig_enforce and (not sig.signed or known is False):
        return [Finding(Check.SIGNATURE, Verdict.PROBLEM,
                        f"{what}, and signatures are enforced: the kernel refuses it "
                        "(EKEYREJECTED)", m.name, tuple(ev),
                        "sign it with a key the kernel trusts (e.g. an enrolled MOK)")]
    if kernel.lockdown in LOCKDOWN_REFUSES and (not sig.signed or known is False):
        return [Finding(Check.SIGNATURE, Verdict.PROBLEM,
                        f"{what}, and the kernel is locked down ({kernel.lockdown}): it "
                        "refuses it (EPERM)", m.name, tuple(ev),
                        "sign it with a key the kernel trusts (e.g. an enrolled MOK)")]
    if not sig.signed or known is False:
        return [Finding(Check.SIGNATURE, Verdict.WARNING,
                        f"{what}: it loads, and taints the kernel (E)", m.name, tuple(ev))]
    return [Finding(Check.SIGNATURE, Verdict.INFO, what, m.name, tuple(ev))]
