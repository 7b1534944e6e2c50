"""From gathered facts to findings: the field's module-debugging checklist, as rules.

`explain_facts(facts)` walks the checklist in a fixed order: a recorded failed attempt (the
errno mapped to its cause, the kernel's own log lines quoted), what the target resolved
to, not found / index problems, then for each module: state, file, `modules_disabled`,
`module_blacklist=`, modprobe.d blacklist (and whom it stops), install commands (and the
softdep that silently disables them), options against the module's parameters,
dependencies, vermagic, unresolved symbols (naming the module that would provide each),
symbol CRCs, and the signature against `sig_enforce`, lockdown and the kernel's keys.
Every rule reads facts only; `kmodd.system.diagnose` gathers them.
"""

from __future__ import annotations

import errno as E
from collections.abc import Sequence

from kmodd.core.explain import Check, Evidence, Explanation, Finding, Verdict
from kmodd.core.explain_facts import (
    ConfigLine,
    Facts,
    FailedAttempt,
    KernelFacts,
    ModuleFacts,
    SymbolFacts,
)
from kmodd.core.kernelview import VMLINUX, vermagic_parts
from kmodd.core.kmsg import KmsgRecord, module_lines
from kmodd.core.libkmodlog import strerror
from kmodd.core.outcome import classify_insert
from kmodd.core.params import IMPLICIT_PARAMETERS, check_value, find_parameter, split_args

#: At most this many kernel log lines are quoted per finding (the newest ones).
KMSG_QUOTE_MAX = 20
#: Lines of the module loader that name no module (signing.c, lockdown, the keyring code):
#: logged during an attempt, they are about it.
LOADER_LINE_PREFIXES = ("Loading of ", "Lockdown: ", "module: ", "Request for unknown module key",
                        "PKCS#7 signature not signed with a trusted key")
#: At most this many symbols are listed as evidence per finding.
SYMBOL_EVIDENCE_MAX = 30
#: Install commands that make a module impossible to load ("blacklisting" by command).
REFUSING_COMMANDS = frozenset({"/bin/false", "false", "/usr/bin/false"})
#: Install commands that make modprobe report success without loading anything.
NOOP_COMMANDS = frozenset({"/bin/true", "true", "/usr/bin/true", ":"})
#: Lockdown modes that refuse unsigned modules (security_locked_down(LOCKDOWN_MODULE_SIGNATURE)).
LOCKDOWN_REFUSES = frozenset({"integrity", "confidentiality"})

#: errno -> what to do about a failed load, in words.
FIXES = {
    E.ENOENT: "see the symbols finding; a module it needs is not loaded, or it was built for "
              "another kernel (or the file is missing)",
    E.ENOEXEC: "rebuild or reinstall the module for the running kernel",
    E.EINVAL: "check the options (and the kernel log line about them) and the symbol versions",
    E.EPERM: "see module_blacklist=, modules_disabled and lockdown below",
    E.EKEYREJECTED: "sign the module with a key the kernel trusts (or enrol the key)",
    E.ENODEV: "nothing to do unless the device should be there: the driver found no device",
    E.EEXIST: "nothing: the module is loaded",
}


def _line(entry: ConfigLine, label: str = "line") -> Evidence:
    return Evidence(label, entry.text, entry.origin.file, entry.origin.line or None)


def _kmsg(records: Sequence[KmsgRecord]) -> tuple[Evidence, ...]:
    return tuple(Evidence("kernel log", r.text) for r in records[-KMSG_QUOTE_MAX:])


def _command(entry: ConfigLine) -> str:
    """The command of an `install NAME COMMAND` line."""
    return entry.text.split(" ", 2)[2].strip() if entry.text.count(" ") >= 2 else ""


# --- the target ---------------------------------------------------------------------------

def _attempt(failure: FailedAttempt, names: Sequence[str]) -> list[Finding]:
    diagnosis = classify_insert(failure.errno)
    who = failure.step or failure.module
    ev = [Evidence("errno", f"{diagnosis.errno_name} ({strerror(failure.errno)})"),
          Evidence("cause", diagnosis.cause)]
    if failure.stage:
        ev.append(Evidence("failed at", failure.stage))
    if failure.options:
        ev.append(Evidence("options", failure.options))
    ev += [Evidence("kmod's message", text) for text in failure.messages]
    lines = [r for r in failure.kmsg if r.text.startswith(LOADER_LINE_PREFIXES)]
    for name in dict.fromkeys([who, failure.module, *names]):
        lines += [r for r in module_lines(failure.kmsg, name) if r not in lines]
    lines.sort(key=lambda r: r.seq)
    ev += _kmsg(lines)
    if not lines:
        ev.append(Evidence("kernel log", "(the kernel logged nothing about it during the "
                                          "attempt)"))
    step = f" (while loading {who})" if who != failure.module else ""
    verdict = Verdict.OK if diagnosis.ok else Verdict.PROBLEM
    return [Finding(Check.ATTEMPT, verdict,
                    f"the load failed with {diagnosis.errno_name}{step}: {diagnosis.outcome}",
                    failure.module, tuple(ev), FIXES.get(failure.errno))]


def _target(facts: Facts) -> list[Finding]:
    if not facts.modules:
        return []
    ev = tuple(Evidence("module", f"{m.name} ({m.source})", m.path) for m in facts.modules)
    if facts.kind == "alias" or any(m.alias for m in facts.modules):
        summary = f"the alias resolves to {len(facts.modules)} module(s): " + \
            ", ".join(m.name for m in facts.modules)
    elif facts.kind == "path":
        summary = f"the file is module {facts.modules[0].name}"
    else:
        summary = f"found through {facts.modules[0].source}"
    return [Finding(Check.TARGET, Verdict.INFO, summary, None, ev)]


def _not_found(facts: Facts) -> list[Finding]:
    if facts.modules:
        return []
    ix, kernel = facts.index, facts.kernel
    if facts.lookup_error:
        return [Finding(Check.NOT_FOUND, Verdict.PROBLEM,
                        f"'{facts.target}' cannot be looked up: {facts.lookup_error}")]
    ev = [Evidence("module directory", "exists" if ix.moddir_exists else "does not exist",
                   ix.moddir),
          Evidence("running kernel", kernel.release, kernel.release_source)]
    ev += [Evidence("other kernel", f"{kver} has it", path) for kver, path in ix.other_kernels]
    ev += [Evidence("not indexed", "a file of that name is not in modules.dep", path)
           for path in ix.unindexed]
    if ix.unindexed:
        fix = "run depmod (the index is older than the file)"
    elif not ix.moddir_exists:
        fix = (f"install the modules of {kernel.release} (a kernel upgrade without a reboot "
               "removes the running kernel's modules), or boot the kernel the modules are for")
    elif ix.other_kernels:
        fix = f"the module exists for other kernels only: install it for {kernel.release}"
    else:
        fix = "check the name; `modprobe -c | grep NAME` shows aliases from modprobe.d"
    moddir_kver = ix.moddir.rstrip("/").rsplit("/", 1)[-1]
    what = f"no module, alias or builtin named '{facts.target}' for kernel {moddir_kver}"
    return [Finding(Check.NOT_FOUND, Verdict.PROBLEM, what, None, tuple(ev), fix)]


def _index(facts: Facts) -> list[Finding]:
    ix = facts.index
    if not ix.moddir_exists:
        return []
    if ix.dep_index_mtime is None:
        return [Finding(Check.INDEX, Verdict.PROBLEM, "the module index is missing",
                        None, (Evidence("missing", "modules.dep.bin", ix.dep_index),),
                        f"run depmod for {ix.moddir.rsplit('/', 1)[-1]}")]
    findings = []
    if ix.problems:
        findings.append(Finding(Check.INDEX, Verdict.PROBLEM, "index files are damaged",
                                None, tuple(Evidence("damaged", p) for p in ix.problems),
                                "run depmod"))
    if ix.newer_modules:
        ev = [Evidence("index written", f"mtime {ix.dep_index_mtime:.0f}", ix.dep_index)]
        if ix.newest_module is not None and ix.newest_module_mtime is not None:
            ev.append(Evidence("newest module", f"mtime {ix.newest_module_mtime:.0f}",
                               ix.newest_module))
        verdict = Verdict.PROBLEM if ix.unindexed else Verdict.WARNING
        findings.append(Finding(
            Check.INDEX, verdict,
            f"the index is older than {ix.newer_modules} module file(s): what it says about "
            "them may be stale", None, tuple(ev), "run depmod"))
    return findings


# --- one module ---------------------------------------------------------------------------

def _loaded(m: ModuleFacts) -> bool:
    return m.builtin or m.state == "live"


def _state(m: ModuleFacts) -> list[Finding]:
    if m.builtin:
        return [Finding(Check.STATE, Verdict.OK,
                        "built into the kernel: there is nothing to load (its options go on "
                        f"the kernel command line as {m.name}.PARAM=VALUE)", m.name,
                        (Evidence("index", "listed in modules.builtin"),))]
    if m.state == "live":
        return [Finding(Check.STATE, Verdict.OK, "already loaded", m.name,
                        (Evidence("initstate", "live", f"/sys/module/{m.name}/initstate"),))]
    if m.state in ("coming", "going"):
        return [Finding(Check.STATE, Verdict.WARNING,
                        f"the kernel is {m.state} to load/unload it right now", m.name,
                        (Evidence("initstate", m.state, f"/sys/module/{m.name}/initstate"),))]
    return [Finding(Check.STATE, Verdict.INFO, "not loaded", m.name)]


def _file(m: ModuleFacts) -> list[Finding]:
    if m.builtin:
        return []
    if m.path is None:
        return [Finding(Check.FILE, Verdict.PROBLEM, "the index names no file for it", m.name,
                        (), "run depmod")]
    if not m.path_exists:
        return [Finding(Check.FILE, Verdict.PROBLEM,
                        "the module file is missing (modprobe words this as 'Unknown symbol "
                        "in module, or unknown parameter')", m.name,
                        (Evidence("missing", m.path, m.path),),
                        "reinstall the package that owns it, then run depmod")]
    p = m.file_problem
    if p is not None:
        return [Finding(Check.FILE, Verdict.PROBLEM, f"the file is not a usable module: "
                        f"{p.reason}", m.name, (Evidence("file", p.reason, p.path, None,
                                                         p.offset),),
                        "reinstall or rebuild the module")]
    return [Finding(Check.FILE, Verdict.OK, "the module file is there and reads as a module",
                    m.name, (Evidence("file", "an ELF module", m.path),))]


def _kernel_switches(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
    if _loaded(m):
        return []
    findings = []
    if kernel.modules_disabled:
        findings.append(Finding(
            Check.MODULES_DISABLED, Verdict.PROBLEM,
            "module loading is switched off until reboot (kernel.modules_disabled=1): every "
            "load fails with EPERM", m.name,
            (Evidence("value", "1", "/proc/sys/kernel/modules_disabled"),),
            "nothing until the next boot (the switch cannot be turned back)"))
    if m.name in kernel.cmdline_blacklist:
        findings.append(Finding(
            Check.KERNEL_BLACKLIST, Verdict.PROBLEM,
            "the kernel command line forbids it (module_blacklist=): the kernel refuses it "
            "with EPERM whoever loads it", m.name,
            (Evidence("kernel command line", kernel.cmdline or "", "/proc/cmdline"),),
            "remove it from module_blacklist= in the boot loader's kernel command line"))
    return findings


def _blacklist(m: ModuleFacts) -> list[Finding]:
    if not m.blacklist:
        return []
    ev = tuple(_line(b) for b in m.blacklist)
    fix = (f"to stop every load use 'install {m.name} /bin/false' (but a softdep on it "
           "disables that); to allow it, remove the line")
    if m.alias is not None:
        return [Finding(Check.BLACKLIST, Verdict.PROBLEM,
                        f"blacklisted, and reached through the alias '{m.alias}': modprobe "
                        "skips it (nothing printed, exit 0), and so do udev and kmodd for "
                        "devices", m.name, ev, fix)]
    return [Finding(Check.BLACKLIST, Verdict.WARNING,
                    "blacklisted: udev and kmodd will not load it for a device, but "
                    f"'modprobe {m.name}' by name still loads it, and so does any module "
                    "that depends on it", m.name, ev, fix)]


def _install(m: ModuleFacts) -> list[Finding]:
    if m.install is None:
        return []
    command = _command(m.install)
    if m.softdep is not None:
        return [Finding(Check.SOFTDEP, Verdict.WARNING,
                        "a softdep silently disables its install command: modprobe loads the "
                        "module and never runs the command (kmod #446)", m.name,
                        (_line(m.install, "install"), _line(m.softdep, "softdep")),
                        "if the install line is meant to block the module, remove the softdep "
                        "(or the module's own softdep through a later softdep line)")]
    ev = (_line(m.install, "install"),)
    if command in REFUSING_COMMANDS:
        return [Finding(Check.INSTALL, Verdict.PROBLEM,
                        f"'{command}' runs instead of loading it and fails: the module cannot "
                        "be loaded through modprobe (insmod still can)", m.name, ev,
                        "remove the install line to allow the module")]
    if command in NOOP_COMMANDS:
        return [Finding(Check.INSTALL, Verdict.PROBLEM,
                        f"'{command}' runs instead of loading it: modprobe reports success and "
                        "nothing is loaded", m.name, ev,
                        "remove the install line to allow the module")]
    return [Finding(Check.INSTALL, Verdict.INFO,
                    "modprobe runs this command instead of loading the module ($CMDLINE_OPTS "
                    "becomes the options); whether the module loads is up to the command",
                    m.name, ev)]


def _options(m: ModuleFacts, extra: str | None) -> list[Finding]:
    given: list[tuple[str, ConfigLine | None]] = [
        (e.text.split(" ", 2)[2] if e.text.count(" ") >= 2 else "", e) for e in m.options]
    if extra:
        given.append((extra, None))
    if not given:
        return []
    bad: list[Evidence] = []
    unknown: list[Evidence] = []
    fine: list[Evidence] = []
    for text, entry in given:
        where = (entry.origin.file, entry.origin.line or None) if entry else (None, None)
        for name, value in split_args(text):
            shown = name if value is None else f"{name}={value}"
            if not m.modinfo_read:
                fine.append(Evidence("option", shown, *where))
                continue
            declared = find_parameter(m.parmtypes, name)
            if declared is None:
                if name not in IMPLICIT_PARAMETERS:
                    unknown.append(Evidence("unknown parameter", shown, *where))
                continue
            why = check_value(m.parmtypes[declared], value)
            if why is not None:
                bad.append(Evidence("invalid value", f"{shown}: {why} "
                                    f"(parmtype {m.parmtypes[declared]})", *where))
            else:
                fine.append(Evidence("option", shown, *where))
    findings = []
    if bad:
        findings.append(Finding(Check.OPTIONS, Verdict.PROBLEM,
                                "an option value the kernel refuses: the load fails with EINVAL",
                                m.name, tuple(bad), "fix or remove the option"))
    if unknown:
        findings.append(Finding(Check.OPTIONS, Verdict.WARNING,
                                "options the module does not have: the kernel ignores them (and "
                                "logs 'unknown parameter ... ignored')", m.name, tuple(unknown),
                                "check the name with `modinfo -p " + m.name + "`"))
    if fine and not findings:
        verdict = Verdict.OK if m.modinfo_read else Verdict.INFO
        findings.append(Finding(Check.OPTIONS, verdict, "options that will be passed", m.name,
                                tuple(fine)))
    return findings


def _dependencies(m: ModuleFacts) -> list[Finding]:
    if m.dependency_error:
        return [Finding(Check.DEPENDENCIES, Verdict.PROBLEM,
                        "modules.dep names a dependency that cannot be used, so kmod drops "
                        "every dependency and loads the module alone", m.name,
                        (Evidence("error", m.dependency_error),), "run depmod")]
    if not m.dependencies:
        return []
    findings = []
    for d in m.dependencies:
        if d.missing:
            findings.append(Finding(Check.DEPENDENCIES, Verdict.PROBLEM,
                                    f"dependency {d.name}: its file is missing", m.name,
                                    (Evidence("missing", d.path or d.name, d.path),),
                                    "reinstall it and run depmod"))
        if d.install is not None and d.softdep is None and not (d.builtin or d.state == "live"):
            command = _command(d.install)
            refuses = command in REFUSING_COMMANDS
            findings.append(Finding(
                Check.DEPENDENCIES, Verdict.PROBLEM if refuses else Verdict.WARNING,
                f"dependency {d.name} is replaced by its install command"
                + (", which fails: so does this module" if refuses else ""),
                m.name, (_line(d.install, "install"),)))
        if d.blacklist:
            findings.append(Finding(
                Check.DEPENDENCIES, Verdict.INFO,
                f"dependency {d.name} is blacklisted, which does not apply to dependencies: "
                "it is loaded anyway", m.name, tuple(_line(b) for b in d.blacklist)))
    if not findings:
        states = ", ".join(f"{d.name} ({'builtin' if d.builtin else d.state or 'not loaded'})"
                           for d in m.dependencies)
        findings.append(Finding(Check.DEPENDENCIES, Verdict.OK,
                                f"modprobe loads its dependencies first: {states}", m.name))
    return findings


def _vermagic(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
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


def _symbols(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
    if not m.modinfo_read or m.builtin or _loaded(m):
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


def _modversions(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
    if not m.modinfo_read or m.builtin or _loaded(m):
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


def _signature(m: ModuleFacts, kernel: KernelFacts) -> list[Finding]:
    sig = m.signature
    if sig is None or m.builtin or _loaded(m):
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


def _log(facts: Facts) -> list[Finding]:
    if facts.failure is not None or not facts.log:
        return []
    return [Finding(Check.KERNEL_LOG, Verdict.INFO,
                    "the kernel log still holds these lines about it (from earlier "
                    "attempts)", None, _kmsg(facts.log))]


def explain_facts(facts: Facts) -> Explanation:
    """Every finding the facts support, in checklist order."""
    names = tuple(m.name for m in facts.modules)
    findings: list[Finding] = []
    if facts.failure is not None:
        findings += _attempt(facts.failure, names)
    findings += _log(facts)
    findings += _target(facts)
    findings += _not_found(facts)
    findings += _index(facts)
    extra = facts.failure.options if facts.failure is not None else None
    for m in facts.modules:
        findings += _state(m)
        findings += _file(m)
        findings += _kernel_switches(m, facts.kernel)
        findings += _blacklist(m)
        findings += _install(m)
        findings += _options(m, extra)
        findings += _dependencies(m)
        findings += _vermagic(m, facts.kernel)
        findings += _symbols(m, facts.kernel)
        findings += _modversions(m, facts.kernel)
        findings += _signature(m, facts.kernel)
    return Explanation(facts.target, facts.kernel.release, facts.index.moddir, names,
                       tuple(findings))
