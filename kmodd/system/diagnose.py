"""Gather what `kmodctl explain` needs to know about a target, under a `Root`.

`explain(target, root=..., moddir=...)` resolves the target as modprobe does (a name, an
alias or a path), reads the index, modprobe.d (with file and line of each entry), the module
file (vermagic, needed symbols with their `__versions` CRCs, parameters, signature), the
running kernel's view (`/proc/kallsyms`, `/proc/keys`, `sig_enforce`, lockdown,
`/proc/cmdline`, `modules_disabled`, `/sys/module`), and hands the facts to
`kmodd.core.explain.rules`. A failed load to explain comes from the daemon's records or
from `kmodd.system.attempt` (a load made for the purpose, watching `/dev/kmsg`).

Nothing read here can raise at the caller: a file that cannot be read is a fact (missing,
unreadable, malformed at an offset), never a traceback. Every file is opened through
`kmodd.system.safeopen` (regular files only, non-blocking open, a size cap per kind), so a
target path naming a FIFO or `/dev/zero` is a problem reported, not a wait or an endless read.
"""

from __future__ import annotations

import errno as E
import mmap
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

from kmodd.core.autoload.kmsg import KmsgRecord, is_about_module
from kmodd.core.explain.facts import (
    ConfigLine,
    DependencyFacts,
    Facts,
    FailedAttempt,
    FileProblem,
    IndexFacts,
    KernelFacts,
    ModuleFacts,
    SignatureFacts,
    SymbolFacts,
)
from kmodd.core.explain.model import Explanation
from kmodd.core.explain.rules import explain_facts
from kmodd.core.kmod.config import Config, Origin
from kmodd.core.kmod.glob import fnmatch
from kmodd.core.kmod.index import Indexes
from kmodd.core.kmod.kernelview import (
    VMLINUX,
    Kallsyms,
    kernel_cmdline_blacklist,
    parse_bool_param,
    parse_kallsyms,
    parse_kernel_config,
    parse_lockdown,
    parse_module_symvers,
    parse_proc_keys,
)
from kmodd.core.kmod.libkmodlog import LibkmodEvent
from kmodd.core.kmod.normalize import modname_normalize, path_ends_with_kmod_ext, path_to_modname
from kmodd.core.kmod.params import parameter_types
from kmodd.core.kmod.plan import ProbeFlag, plan_probe, step_in_kernel
from kmodd.core.kmod.resolve import Builtin, Module, ModuleLookupError, Resolver
from kmodd.core.modfile import compression
from kmodd.core.modfile.elf import SHF_ALLOC, ElfError, ModuleElf, parse_module
from kmodd.core.modfile.signature import NoSignature, SignatureError, parse_module_signature
from kmodd.system.codecs import unzstd
from kmodd.system.kernel import KernelPort
from kmodd.system.kmsg import DevKmsg
from kmodd.system.moddb import load_config, raw_indexes
from kmodd.system.modstate import SysModules
from kmodd.system.root import MODULE_DIRECTORY, Root
from kmodd.system.safeopen import (
    MODULE_FILE_MAX,
    Refusal,
    Refused,
    map_regular,
    read_lines,
    read_regular,
)
from kmodd.system.sysview import FileView

#: Kernel modules read (in modules.dep order) looking for the kernel's own vermagic.
VERMAGIC_SCAN_MAX = 50
#: Kernel modules whose `__versions` are read looking for vmlinux's CRCs (when no
#: Module.symvers is installed); the search stops earlier once every symbol has one.
VMLINUX_CRC_SCAN_MAX = 600
#: Other kernels' module directories searched for a module not found for this one.
OTHER_KERNELS_MAX = 8
#: Where a build's record of vmlinux's export CRCs may be installed ({release}, {moddir}).
SYMVERS_PATHS = ("{moddir}/build/Module.symvers",
                 "/usr/src/linux-headers-{release}/Module.symvers")
#: The running kernel's build configuration (Debian installs it beside the kernel).
KERNEL_CONFIG = "/boot/config-{release}"
#: The running kernel's release, as the kernel itself states it.
OSRELEASE = "/proc/sys/kernel/osrelease"
#: Largest text file read about the system: `/proc/kallsyms` (some 10 MiB with many modules
#: loaded), Module.symvers (a few MiB), the kernel's config, modules.dep; /proc files have
#: `st_size` 0, so the cap bounds the read itself.
SYSTEM_TEXT_MAX = 64 << 20


def _read_text(path: str) -> str | None:
    data = read_regular(path, SYSTEM_TEXT_MAX)
    return None if isinstance(data, Refused) else data.decode("latin-1")


def running_release(root: Root) -> tuple[str, str]:
    """(release, where it was read): /proc/sys/kernel/osrelease, else uname."""
    text = _read_text(root.proc("sys/kernel/osrelease"))
    if text and text.strip():
        return text.strip(), OSRELEASE
    return os.uname().release, "uname"


def default_moddir(root: Root) -> str:
    """The running kernel's module directory, as the system names it."""
    return f"{MODULE_DIRECTORY}/{running_release(root)[0]}"


# --- reading module files -------------------------------------------------------------------

@dataclass(slots=True)
class _Image:
    """A module file read and parsed (or why it could not be)."""

    elf: ModuleElf | None = None
    data: bytes | mmap.mmap = b""
    problem: FileProblem | None = None


def read_module(path: str, shown: str) -> _Image:
    """The decompressed, parsed image of a module file (`shown` names it in problems).

    An uncompressed file stays mapped: only the pages the parse touches are read (an
    explanation may look into hundreds of the kernel's modules for vmlinux's CRCs)."""
    raw = map_regular(path, MODULE_FILE_MAX, shown)
    if isinstance(raw, Refused):
        if raw.refusal in (Refusal.NOT_REGULAR, Refusal.TOO_LARGE):
            # "it is a FIFO", "it is larger than ... bytes": never waited on or read whole.
            return _Image(problem=FileProblem(shown, f"it {raw.reason}"))
        return _Image(problem=FileProblem(shown, f"cannot read it: {raw.reason}"))
    try:
        decoded = compression.decompress(raw, unzstd)
        data = decoded if isinstance(decoded, mmap.mmap) else bytes(decoded)
    except compression.DecompressError as err:
        return _Image(problem=FileProblem(shown, f"cannot decompress it: {err.message}"))
    try:
        return _Image(parse_module(data, shown), data)
    except ElfError as err:
        return _Image(problem=FileProblem(shown, err.reason, err.offset), data=data)


def _versions(elf: ModuleElf) -> dict[str, int]:
    try:
        return {v.name: v.crc for v in elf.versions()}
    except ElfError:
        return {}


@dataclass(slots=True)
class _ModuleRead:
    """What the module file says, before the kernel's side is looked at."""

    vermagic: str | None = None
    parmtypes: dict[str, str] = field(default_factory=dict)
    has_versions: bool = False
    needed: list[tuple[str, int | None, bool]] = field(default_factory=list)
    signature: SignatureFacts | None = None
    problem: FileProblem | None = None
    read: bool = False


def _inspect(path: str, shown: str) -> _ModuleRead:
    image = read_module(path, shown)
    if image.elf is None:
        return _ModuleRead(problem=image.problem)
    elf = image.elf
    out = _ModuleRead(read=True)
    try:
        magic = elf.modinfo_values("vermagic")
        out.vermagic = magic[0] if magic else None
        out.parmtypes = parameter_types(elf.modinfo_values("parmtype"))
    except ElfError as err:
        if err.errno != E.ENOENT:
            out.problem = FileProblem(shown, err.reason, err.offset)
            out.read = False
            return out
    versions = elf.section("__versions")
    out.has_versions = bool(versions is not None and versions.flags & SHF_ALLOC
                            and versions.size)
    recorded = _versions(elf)
    try:
        out.needed = [(n, recorded.get(n), w) for n, _, w in elf.needed_triples()]
    except ElfError as err:
        out.problem = FileProblem(shown, f"its symbol table cannot be read: {err.reason}",
                                  err.offset)
        out.read = False
        return out
    sig = parse_module_signature(image.data)
    if isinstance(sig, NoSignature):
        out.signature = SignatureFacts(False, note=sig.reason)
    elif isinstance(sig, SignatureError):
        out.signature = SignatureFacts(True, error=str(sig))
    else:
        out.signature = SignatureFacts(True, sig.signer.decode("latin-1"), sig.key_id.hex(),
                                       sig.hash_algo, sig.id_type)
    return out


def _exports(path: str) -> dict[str, int]:
    image = read_module(path, path)
    if image.elf is None:
        return {}
    try:
        return {e.name: e.crc for e in image.elf.exports()}
    except ElfError:
        return {}


# --- the kernel -----------------------------------------------------------------------------

def _kernel_facts(root: Root, symbols: Collection[str]) -> KernelFacts:
    """The running kernel's view; of its symbol table only `symbols` (those the modules
    being explained need) are kept."""
    release, source = running_release(root)
    config_path = KERNEL_CONFIG.format(release=release)
    config_text = _read_text(root.path(config_path))
    build = parse_kernel_config(config_text) if config_text else {}
    force = build.get("CONFIG_MODULE_FORCE_LOAD")
    cmdline = _read_text(root.proc("cmdline"))
    disabled = _read_text(root.proc("sys/kernel/modules_disabled"))
    enforce = _read_text(root.sys("module/module/parameters/sig_enforce"))
    lockdown = _read_text(root.sys("kernel/security/lockdown"))
    keys = _read_text(root.proc("keys"))
    lines = read_lines(root.proc("kallsyms"), SYSTEM_TEXT_MAX)
    kallsyms = None if isinstance(lines, Refused) else parse_kallsyms(lines, symbols)
    return KernelFacts(
        release=release, release_source=source,
        modules_disabled=(disabled.strip() == "1") if disabled is not None else None,
        cmdline=cmdline.strip() if cmdline is not None else None,
        cmdline_blacklist=kernel_cmdline_blacklist(cmdline or ""),
        sig_enforce=parse_bool_param(enforce) if enforce is not None else None,
        lockdown=parse_lockdown(lockdown) if lockdown is not None else None,
        keyrings=parse_proc_keys(keys) if keys is not None else None,
        kallsyms=kallsyms if kallsyms is not None and kallsyms.lines else None,
        force_load=None if not build else force == "y",
        config_source=config_path if build else None,
    )


def _dep_lines(real_moddir: str) -> list[tuple[str, list[str]]]:
    """modules.dep (the text file) as (module path, dependency paths), in its order."""
    text = _read_text(f"{real_moddir}/modules.dep") or ""
    out = []
    for line in text.splitlines():
        head, sep, tail = line.partition(":")
        if sep:
            out.append((head, tail.split()))
    return out


def _module_file(root: Root, moddir: str, rel: str) -> tuple[str, str]:
    """(shown path, real path) of a modules.dep entry."""
    shown = rel if rel.startswith("/") else f"{moddir}/{rel}"
    return shown, root.path(shown)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _kernel_vermagic(root: Root, moddir: str, deps: list[tuple[str, list[str]]],
                     skip: set[str]) -> tuple[str | None, str | None]:
    """The vermagic the kernel's own (in-tree) modules carry, and the file it came from."""
    scanned = 0
    for rel, _ in deps:
        if not rel.startswith("kernel/") or path_to_modname(rel) in skip:
            continue
        scanned += 1
        if scanned > VERMAGIC_SCAN_MAX:
            break
        shown, real = _module_file(root, moddir, rel)
        image = read_module(real, shown)
        if image.elf is None:
            continue
        try:
            if not image.elf.modinfo_values("intree"):
                continue
            magic = image.elf.modinfo_values("vermagic")
        except ElfError:
            continue
        if magic:
            return magic[0], shown
    return None, None


def _vmlinux_crcs(root: Root, moddir: str, release: str, deps: list[tuple[str, list[str]]],
                  wanted: set[str]) -> tuple[dict[str, int], str | None]:
    """CRCs of vmlinux's exports: from an installed Module.symvers, else as the kernel's own
    modules recorded them in their `__versions` (they were built together with it)."""
    if not wanted:
        return {}, None
    for pattern in SYMVERS_PATHS:
        shown = pattern.format(moddir=moddir, release=release)
        text = _read_text(root.path(shown))
        if text:
            return parse_module_symvers(text, wanted=wanted), shown
    found: dict[str, int] = {}
    scanned = 0
    for rel, _ in deps:
        if not wanted - found.keys() or scanned >= VMLINUX_CRC_SCAN_MAX:
            break
        if not rel.startswith("kernel/"):
            continue
        scanned += 1
        shown, real = _module_file(root, moddir, rel)
        image = read_module(real, shown)
        if image.elf is None:
            continue
        for name, crc in _versions(image.elf).items():
            if name in wanted:
                found.setdefault(name, crc)
    if not found:
        return {}, None
    return found, f"the __versions of the kernel's own modules in {moddir} ({scanned} read)"


# --- the index ------------------------------------------------------------------------------

def _index_facts(root: Root, moddir: str, names: set[str], problems: Iterable[str],
                 look_elsewhere: bool) -> IndexFacts:
    real = root.path(moddir)
    dep_bin = f"{moddir}/modules.dep.bin"
    try:
        index_mtime: float | None = os.stat(root.path(dep_bin)).st_mtime
    except OSError:
        index_mtime = None
    newest: tuple[float, str] | None = None
    newer = 0
    named: list[str] = []
    for dirpath, _, files in os.walk(real):
        for fname in files:
            if not path_ends_with_kmod_ext(fname):
                continue
            full = os.path.join(dirpath, fname)
            try:
                mtime = os.stat(full).st_mtime
            except OSError:
                continue
            shown = moddir + full[len(real):]
            if newest is None or mtime > newest[0]:
                newest = (mtime, shown)
            if index_mtime is not None and mtime > index_mtime:
                newer += 1
            if path_to_modname(fname) in names:
                named.append(shown)
    others: list[tuple[str, str]] = []
    if look_elsewhere:
        base = root.path(MODULE_DIRECTORY)
        kver = moddir.rstrip("/").rsplit("/", 1)[-1]
        try:
            kernels = sorted(k for k in os.listdir(base) if k != kver)[:OTHER_KERNELS_MAX]
        except OSError:
            kernels = []
        for other in kernels:
            for dirpath, _, files in os.walk(os.path.join(base, other)):
                for fname in files:
                    if path_ends_with_kmod_ext(fname) and path_to_modname(fname) in names:
                        shown = f"{MODULE_DIRECTORY}/{other}" + \
                            os.path.join(dirpath, fname)[len(os.path.join(base, other)):]
                        others.append((other, shown))
    return IndexFacts(
        moddir=moddir, moddir_exists=os.path.isdir(real), dep_index=dep_bin,
        dep_index_mtime=index_mtime,
        newest_module=newest[1] if newest else None,
        newest_module_mtime=newest[0] if newest else None,
        newer_modules=newer, problems=tuple(problems), other_kernels=tuple(others),
        unindexed=tuple(named) if look_elsewhere else ())


# --- modprobe.d ---------------------------------------------------------------------------

def _origin(origins: tuple[Origin, ...], i: int) -> Origin:
    return origins[i] if i < len(origins) else Origin("(unknown)", 0)


def _blacklist(config: Config, name: str) -> tuple[ConfigLine, ...]:
    return tuple(ConfigLine(f"blacklist {b}", _origin(config.blacklist_origins, i))
                 for i, b in enumerate(config.blacklists) if b == name)


def _first_command(entries: tuple[tuple[str, str], ...], origins: tuple[Origin, ...],
                   kind: str, name: str) -> ConfigLine | None:
    for i, (pattern, command) in enumerate(entries):
        if fnmatch(pattern, name):
            return ConfigLine(f"{kind} {pattern} {command}", _origin(origins, i))
    return None


def _softdep(config: Config, name: str) -> ConfigLine | None:
    for i, sd in enumerate(config.softdeps):
        if fnmatch(sd.name, name):
            return ConfigLine(f"softdep {sd.name} {sd.text()}", _origin(config.softdep_origins, i))
    return None


def _options(config: Config, mod: Module) -> tuple[ConfigLine, ...]:
    return tuple(ConfigLine(f"options {key} {text}", _origin(config.option_origins, i))
                 for i, (key, text) in enumerate(config.options)
                 if text and (key == mod.name or (mod.alias is not None and key == mod.alias)))


def _source(config: Config, mod: Module, resolver: Resolver) -> str:
    alias = mod.alias
    if alias is None:
        if mod.builtin is Builtin.YES and resolver.indexes.dep_line(mod.name) is None:
            return "modules.builtin"
        if resolver.indexes.dep_line(mod.name) is None and mod.install is not None:
            return "an install command"
        return "modules.dep"
    for i, (pattern, target) in enumerate(config.aliases):
        if pattern == alias and target == mod.name:
            return f"alias in {_origin(config.alias_origins, i)}"
    if alias.startswith("symbol:"):
        return "modules.symbols"
    if mod.builtin is Builtin.YES:
        return "modules.builtin.alias"
    return "modules.alias"


# --- putting it together ------------------------------------------------------------------

def _is_path(target: str, files: FileView) -> bool:
    if target.startswith("/") or target.startswith("./"):
        return True
    return path_ends_with_kmod_ext(target) and files.stat_errno(
        target if target.startswith("/") else f"{files.cwd()}/{target}") == 0


@dataclass(slots=True)
class _Context:
    root: Root
    moddir: str
    config: Config
    resolver: Resolver
    files: FileView
    state: SysModules
    kallsyms: Kallsyms | None
    deps: list[tuple[str, list[str]]]
    events: list[LibkmodEvent]


def _module_facts(ctx: _Context, mod: Module, read: _ModuleRead, vmlinux: Mapping[str, int],
                  vmlinux_source: str | None) -> ModuleFacts:
    resolver, config = ctx.resolver, ctx.config
    builtin = resolver.is_builtin(mod)
    path = resolver.path(mod)
    state = ctx.state.initstate(mod.name)
    before = len(ctx.events)
    deps = resolver.dependencies(mod)
    dep_error = next((e.text.strip() for e in ctx.events[before:] if e.site == "dep_path"),
                     None)
    dep_names = {d.name for d in deps}
    dependencies = tuple(DependencyFacts(
        name=d.name, path=resolver.path(d),
        missing=ctx.files.stat_errno(resolver.path(d) or "/") != 0,
        state=str(s) if (s := ctx.state.initstate(d.name)) is not None else None,
        builtin=resolver.is_builtin(d),
        install=_first_command(config.installs, config.install_origins, "install", d.name),
        softdep=_softdep(config, d.name), blacklist=_blacklist(config, d.name)) for d in deps)
    symbols = []
    provider_exports: dict[str, dict[str, int]] = {}
    for name, crc, weak in read.needed:
        owner = ctx.kallsyms.exports.get(name) if ctx.kallsyms is not None else None
        providers = tuple(resolver.indexes.symbols(f"symbol:{name}") or ())
        expected: int | None = None
        source: str | None = None
        exporter = owner if owner is not None else (providers[0] if providers else VMLINUX)
        if exporter == VMLINUX:
            expected = vmlinux.get(name)
            source = vmlinux_source if expected is not None else None
        elif crc is not None:
            exporter_path = resolver.path(resolver.new_from_name(exporter))
            if exporter_path is not None:
                if exporter not in provider_exports:
                    provider_exports[exporter] = _exports(ctx.root.path(exporter_path))
                expected = provider_exports[exporter].get(name)
                source = exporter_path if expected is not None else None
        symbols.append(SymbolFacts(name, weak, crc, owner, providers,
                                   bool(dep_names.intersection(providers)), expected, source))
    plan, early = _plan(resolver, ctx.state, mod)
    return ModuleFacts(
        name=mod.name, alias=mod.alias, source=_source(config, mod, resolver), path=path,
        path_exists=path is not None and ctx.files.stat_errno(path) == 0,
        builtin=builtin, state=str(state) if state is not None else None,
        file_problem=read.problem, blacklist=_blacklist(config, mod.name),
        install=_first_command(config.installs, config.install_origins, "install", mod.name),
        softdep=_softdep(config, mod.name), options=_options(config, mod),
        parmtypes=read.parmtypes, modinfo_read=read.read, vermagic=read.vermagic,
        has_versions=read.has_versions, symbols=tuple(symbols), signature=read.signature,
        dependencies=dependencies, dependency_error=dep_error, plan=plan, plan_early=early)


def _plan(resolver: Resolver, state: SysModules, mod: Module) -> tuple[tuple[str, ...],
                                                                       str | None]:
    """What `modprobe NAME` would do (modprobe's flags), one `modprobe -v` line per step."""
    plan = plan_probe(resolver, state, mod, ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY)
    if plan.skip is not None:
        return (), plan.skip.value
    steps = []
    for step in plan.steps:
        options = step.options or ""
        if step_in_kernel(state, step):
            steps.append(f"skip {step.name} (already loaded)")
        elif step.command is not None:
            steps.append(f"install {step.command} {options}".rstrip())
        elif step.path is not None:
            steps.append(f"insmod {step.path} {options}".rstrip())
        elif step.builtin:
            steps.append(f"builtin {step.name}")
    return tuple(steps), None


def gather(target: str, *, root: Root, moddir: str, kernel: KernelPort | None = None,
           config: Config | None = None, failure: FailedAttempt | None = None,
           indexes: Indexes | None = None, read_log: bool = True) -> Facts:
    """Every fact about `target` that the checklist needs."""

    real_moddir = root.path(moddir)
    if config is None:
        config = load_config(root, moddir, real_moddir=real_moddir)
    problems: list[str] = []
    if indexes is None:
        raw, found = raw_indexes(moddir, real_moddir)
        indexes = raw
        # An empty index (depmod writes one when, say, modules.builtin is missing) is no
        # damage: kmod finds nothing in it and goes on.
        problems = [str(p) for p in found if p.kind != "short" or _size(root.path(p.path))]
    files = FileView(root)
    events: list[LibkmodEvent] = []
    resolver = Resolver(indexes, config, files, log=events.append)
    state = kernel.modules if kernel is not None else SysModules(root)
    kind = "name"
    lookup_error = None
    mods: list[Module] = []
    try:
        if _is_path(target, files):
            kind = "path"
            mods = [resolver.new_from_path(target)]
        else:
            mods = resolver.lookup(target)
            kind = "alias" if any(m.alias for m in mods) else "name"
    except ModuleLookupError as err:
        if kind == "path":
            lookup_error = f"{target}: {os.strerror(err.errno)}"
        else:
            lookup_error = f"not a valid module name or alias ({os.strerror(err.errno)})"
    deps = _dep_lines(real_moddir)
    reads: list[_ModuleRead] = []
    for mod in mods:
        path = resolver.path(mod)
        if path is None or resolver.is_builtin(mod) or files.stat_errno(path):
            reads.append(_ModuleRead())
        else:
            reads.append(_inspect(root.path(path), path))
    kernel_facts = _kernel_facts(root, {n for r in reads for n, _, _ in r.needed})
    ctx = _Context(root, moddir, config, resolver, files, state, kernel_facts.kallsyms, deps,
                   events)
    names = {modname_normalize(target.rsplit("/", 1)[-1].split(".", 1)[0])} | \
        {m.name for m in mods}
    magic, magic_source = _kernel_vermagic(root, moddir, deps, {m.name for m in mods})
    wanted = {n for r in reads for n, crc, _ in r.needed if crc is not None and (
        kernel_facts.kallsyms is None or kernel_facts.kallsyms.exports.get(n) in (VMLINUX, None)
    ) and not resolver.indexes.symbols(f"symbol:{n}")}
    crcs, crc_source = _vmlinux_crcs(root, moddir, kernel_facts.release, deps, wanted)
    kernel_facts = replace(kernel_facts, vermagic=magic, vermagic_source=magic_source,
                           vmlinux_crcs=crcs, vmlinux_crc_source=crc_source)
    module_facts = tuple(_module_facts(ctx, m, r, crcs, crc_source)
                         for m, r in zip(mods, reads, strict=True))
    log: tuple[KmsgRecord, ...] = ()
    if read_log and failure is None:
        log = tuple(r for r in DevKmsg(root).read_all()
                    if any(is_about_module(r, n) for n in names))
    return Facts(target=target, kind=kind, kernel=kernel_facts,
                 index=_index_facts(root, moddir, names, problems, not mods),
                 modules=module_facts, lookup_error=lookup_error, failure=failure, log=log,
                 log_source="/dev/kmsg" if log else None)


def explain(target: str, *, root: Root, moddir: str, kernel: KernelPort | None = None,
            config: Config | None = None, failure: FailedAttempt | None = None,
            indexes: Indexes | None = None, read_log: bool = True) -> Explanation:
    """Why `target` (a module name, an alias or a path) does or does not load.

    `kernel` gives module state (the simulated kernel in tests; the running one by default);
    `config` and `indexes` may be handed in by a daemon that holds them; `failure` is a load
    that failed (its errno is mapped to the cause and its kernel log lines are quoted);
    `read_log` quotes the kernel log lines about the module still in /dev/kmsg when there is
    no failure to quote.
    """
    return explain_facts(gather(target, root=root, moddir=moddir, kernel=kernel,
                                config=config, failure=failure, indexes=indexes,
                                read_log=read_log))
