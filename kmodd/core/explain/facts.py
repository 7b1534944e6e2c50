"""The facts `kmodctl explain` gathers about a target, as values (evidence in).

`kmodd.system.diagnose` fills these from the system (indexes, modprobe.d, the module file,
/proc and /sys); `kmodd.core.explain.rules` turns them into findings. Nothing here reads
anything: a test can write facts down and check the findings they lead to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kmodd.core.autoload.kmsg import KmsgRecord
from kmodd.core.kmod.config import Origin
from kmodd.core.kmod.kernelview import Kallsyms, Keyrings


@dataclass(frozen=True, slots=True)
class ConfigLine:
    """A modprobe.d entry that applies to a module, as kmod prints it, and where it was."""

    text: str  # e.g. "blacklist pcspkr", "install floppy /bin/false"
    origin: Origin


@dataclass(frozen=True, slots=True)
class KernelFacts:
    """What the running kernel says about loading modules."""

    release: str
    release_source: str  # where the release was read ("/proc/sys/kernel/osrelease", "uname")
    modules_disabled: bool | None = None  # None: unreadable
    cmdline: str | None = None
    cmdline_blacklist: tuple[str, ...] = ()  # module_blacklist=
    sig_enforce: bool | None = None  # None: no /sys/module/module/parameters/sig_enforce
    lockdown: str | None = None  # None: no lockdown LSM (or unreadable)
    keyrings: Keyrings | None = None  # None: /proc/keys unreadable
    kallsyms: Kallsyms | None = None  # None: /proc/kallsyms unreadable or empty
    vermagic: str | None = None  # vermagic as the kernel's own modules carry it
    vermagic_source: str | None = None  # the module file it was read from
    vmlinux_crcs: Mapping[str, int] = field(default_factory=dict)
    vmlinux_crc_source: str | None = None  # where vmlinux's export CRCs came from
    force_load: bool | None = None  # CONFIG_MODULE_FORCE_LOAD (None: the config is unknown)
    config_source: str | None = None  # where the kernel's build config was read


@dataclass(frozen=True, slots=True)
class IndexFacts:
    """The module directory and its index."""

    moddir: str
    moddir_exists: bool
    dep_index: str  # path of modules.dep.bin
    dep_index_mtime: float | None = None  # None: missing
    newest_module: str | None = None
    newest_module_mtime: float | None = None
    newer_modules: int = 0  # module files changed after the index was written
    problems: tuple[str, ...] = ()  # damaged index files
    other_kernels: tuple[tuple[str, str], ...] = ()  # (release, file) with the target's name
    unindexed: tuple[str, ...] = ()  # files in moddir with the target's name, not indexed


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A module file that is not a module kmod (or the kernel) can use."""

    path: str
    reason: str
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class SymbolFacts:
    """One symbol a module needs and who could provide it."""

    name: str
    weak: bool
    crc: int | None  # the module's `__versions` CRC for it (None: no record)
    owner: str | None  # who exports it now (kallsyms): "vmlinux" or a loaded module
    providers: tuple[str, ...] = ()  # modules.symbols: modules that export it
    provider_in_deps: bool = False  # one of them is among the module's dependencies
    expected_crc: int | None = None  # the exporter's CRC
    crc_source: str | None = None


@dataclass(frozen=True, slots=True)
class SignatureFacts:
    """The signature appended to a module file."""

    signed: bool
    signer: str | None = None
    key_id: str | None = None  # hex, as modinfo's sig_key (colons left out)
    hash_algo: str | None = None
    id_type: str | None = None
    error: str | None = None  # a signature is there but cannot be read
    note: str | None = None  # why kmod sees no signature


@dataclass(frozen=True, slots=True)
class DependencyFacts:
    """A module's hard dependency (modules.dep) as it stands."""

    name: str
    path: str | None
    missing: bool  # the file named in modules.dep does not exist
    state: str | None  # live, coming, going or None (not loaded)
    builtin: bool
    install: ConfigLine | None = None
    softdep: ConfigLine | None = None
    blacklist: tuple[ConfigLine, ...] = ()


@dataclass(frozen=True, slots=True)
class ModuleFacts:
    """One module the target resolved to."""

    name: str
    alias: str | None  # the alias it was reached through (None: by name or path)
    source: str  # the lookup step ("modules.dep", "modules.alias", "path", ...)
    path: str | None
    path_exists: bool
    builtin: bool
    state: str | None  # live, coming, going; None when not loaded
    file_problem: FileProblem | None = None
    blacklist: tuple[ConfigLine, ...] = ()
    install: ConfigLine | None = None
    softdep: ConfigLine | None = None
    options: tuple[ConfigLine, ...] = ()
    parmtypes: Mapping[str, str] = field(default_factory=dict)
    modinfo_read: bool = False  # the file was read as a module (the checks below are real)
    vermagic: str | None = None
    has_versions: bool = False
    symbols: tuple[SymbolFacts, ...] = ()
    signature: SignatureFacts | None = None
    dependencies: tuple[DependencyFacts, ...] = ()
    dependency_error: str | None = None
    plan: tuple[str, ...] = ()  # modprobe's steps, as `modprobe -v` prints them
    plan_early: str | None = None  # why modprobe would do nothing (a core.kmod.plan.Skip)


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """A load that failed: what the kernel (or kmod) returned, and what the kernel logged.

    `kmsg` holds the records read from /dev/kmsg while the attempt ran (any module's: the
    rules pick the module's own lines). `step` is the module whose step failed (a
    dependency, or the module itself); `stage` is what gave the errno ("finit_module",
    "init_module", "open", "install command", ...); `options` the options given with it.
    """

    module: str
    errno: int
    stage: str | None = None
    step: str | None = None
    kmsg: tuple[KmsgRecord, ...] = ()
    options: str | None = None
    messages: tuple[str, ...] = ()  # what kmod printed (libkmod's and modprobe's lines)
    declined: bool = False  # EEXIST came from the module's own init (nothing was loaded)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything gathered about one target."""

    target: str
    kind: str  # "name", "alias" or "path"
    kernel: KernelFacts
    index: IndexFacts
    modules: tuple[ModuleFacts, ...] = ()
    lookup_error: str | None = None
    failure: FailedAttempt | None = None
    log: tuple[KmsgRecord, ...] = ()  # lines about the module(s) still in the kernel log
    log_source: str | None = None
