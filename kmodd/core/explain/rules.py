"""From gathered facts to findings: the field's module-debugging checklist, as rules.

`explain_facts(facts)` walks the checklist in a fixed order: a recorded failed attempt (the
errno mapped to its cause, the kernel's own log lines quoted), what the target resolved
to, not found / index problems, then for each module: state, modprobe's plan, file,
`modules_disabled`,
`module_blacklist=`, modprobe.d blacklist (and whom it stops), install commands (and the
softdep that silently disables them), options against the module's parameters,
dependencies, vermagic, unresolved symbols (naming the module that would provide each),
symbol CRCs, and the signature against `sig_enforce`, lockdown and the kernel's keys (the
last four in `kmodd.core.explain.kernel_rules`). Every rule reads facts only;
`kmodd.system.diagnose` gathers them.
"""

from __future__ import annotations

import errno as E
from collections.abc import Sequence

from kmodd.core.autoload.kmsg import KmsgRecord, module_lines
from kmodd.core.autoload.outcome import classify_insert
from kmodd.core.explain.facts import (
    ConfigLine,
    Facts,
    FailedAttempt,
    KernelFacts,
    ModuleFacts,
)
from kmodd.core.explain.kernel_rules import loaded, modversions, signature, symbols, vermagic
from kmodd.core.explain.model import Check, Evidence, Explanation, Finding, Verdict
from kmodd.core.kmod.libkmodlog import strerror
from kmodd.core.kmod.params import IMPLICIT_PARAMETERS, check_value, find_parameter, split_args
from kmodd.core.kmod.plan import Skip

#: At most this many kernel log lines are quoted per finding (the newest ones).
KMSG_QUOTE_MAX = 20
#: Lines of the module loader that name no module (signing.c, lockdown, the keyring code):
#: logged during an attempt, they are about it.
LOADER_LINE_PREFIXES = ("Loading of ", "Lockdown: ", "module: ", "Request for unknown module key",
                        "PKCS#7 signature not signed with a trusted key")
#: Install commands that make a module impossible to load ("blacklisting" by command).
REFUSING_COMMANDS = frozenset({"/bin/false", "false", "/usr/bin/false"})
#: Install commands that make modprobe report success without loading anything.
NOOP_COMMANDS = frozenset({"/bin/true", "true", "/usr/bin/true", ":"})

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
#: What to do when a module's init refused with EEXIST
#: (see core.autoload.outcome.DECLINED_EXPLANATION).
DECLINED_FIX = ("nothing, unless this module should be the one in charge: then unload the "
                "module of its kind that is (for cpufreq: the driver named in "
                "/sys/devices/system/cpu/cpufreq/policy0/scaling_driver) and load this one")


def _line(entry: ConfigLine, label: str = "line") -> Evidence:
    return Evidence(label, entry.text, entry.origin.file, entry.origin.line or None)


def _kmsg(records: Sequence[KmsgRecord]) -> tuple[Evidence, ...]:
    return tuple(Evidence("kernel log", r.text) for r in records[-KMSG_QUOTE_MAX:])


def _command(entry: ConfigLine) -> str:
    """The command of an `install NAME COMMAND` line."""
    return entry.text.split(" ", 2)[2].strip() if entry.text.count(" ") >= 2 else ""


# --- the target ---------------------------------------------------------------------------

def _attempt(failure: FailedAttempt, names: Sequence[str]) -> list[Finding]:
    diagnosis = classify_insert(failure.errno, declined=failure.declined)
    who = failure.step or failure.module
    ev = [Evidence("errno", f"{diagnosis.errno_name} ({strerror(failure.errno)})"),
          Evidence("cause", diagnosis.explanation)]
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
    fix = DECLINED_FIX if failure.declined else FIXES.get(failure.errno)
    return [Finding(Check.ATTEMPT, verdict,
                    f"the load failed with {diagnosis.errno_name}{step}: {diagnosis.cause}",
                    failure.module, tuple(ev), fix)]


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


def _plan(m: ModuleFacts) -> list[Finding]:
    if m.plan_early == Skip.BLACKLISTED:
        return [Finding(Check.PLAN, Verdict.INFO, f"modprobe {m.alias or m.name} would do "
                        "nothing: the blacklist applies", m.name)]
    if m.plan_early is not None or not m.plan:
        return []
    return [Finding(Check.PLAN, Verdict.INFO, f"modprobe {m.alias or m.name} would run these "
                    "steps", m.name, tuple(Evidence("step", step) for step in m.plan))]


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
    if loaded(m):
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
        findings += _plan(m)
        findings += _file(m)
        findings += _kernel_switches(m, facts.kernel)
        findings += _blacklist(m)
        findings += _install(m)
        findings += _options(m, extra)
        findings += _dependencies(m)
        findings += vermagic(m, facts.kernel)
        findings += symbols(m, facts.kernel)
        findings += modversions(m, facts.kernel)
        findings += signature(m, facts.kernel)
    return Explanation(facts.target, facts.kernel.release, facts.index.moddir, names,
                       tuple(findings))
