"""`modprobe`, compatible with kmod 30 (Debian 12): same flags, output and exit codes.

The flow follows tools/modprobe.c: options (after `$MODPROBE_OPTIONS`, which is split and
put in front of the arguments), the module directory from `-d`/`-S`, the configuration
(its problems printed by libkmod's default logger, because kmod parses it while creating
the library context), the indexes, then one of: `-c`, `-R`, `-D`/`-n`/`-v` (a plan printed),
a real load, or `-r`. Planning and running are kmodd's core (`kmodd.core.kmod.plan`), shared with
the daemon.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, BinaryIO

from kmodd.cli.gnuopt import Arg, GetoptLong, LongOpt, OptError
from kmodd.cli.kmodtool import LibkmodDefaultLog, ToolLog, latin1, reports_index_damage
from kmodd.core.kmod.binindex import INDEX_MAGIC, INDEX_VERSION_MAJOR
from kmodd.core.kmod.config import Config
from kmodd.core.kmod.index import INDEX_FILES, IndexProblem
from kmodd.core.kmod.libkmodlog import LibkmodEvent, Priority
from kmodd.core.kmod.normalize import path_to_modname
from kmodd.core.kmod.resolve import CTX, Module, ModuleLookupError, Resolver
from kmodd.system.root import Root, kernel_release, module_dir

if TYPE_CHECKING:
    from kmodd.core.kmod.plan import Plan, ProbeFlag, Step
    from kmodd.core.modfile.elf import ModuleElf
    from kmodd.system.kernel import KernelPort
    from kmodd.system.modstate import SysModules

# A one-shot `modprobe -R` must start fast (bench/bench_oneshot.py: at most 1.5 times
# `python3 -c pass`): what only loading, removing or --show-* need (planning, removal, the
# ELF reader, the kernel edge) is imported where it is used, in each function below.

SHORT_OPTIONS = "arw:RibfDcnC:d:S:sqvVh"
# Long-only options are keyed by their own name (modprobe.c gives them small numbers).
_N, _R = Arg.NONE, Arg.REQUIRED
LONG_OPTIONS = (
    LongOpt("all", _N, "a"),
    LongOpt("remove", _N, "r"),
    LongOpt("remove-dependencies", _N, "remove-holders"),
    LongOpt("remove-holders", _N, "remove-holders"),
    LongOpt("wait", _R, "w"),
    LongOpt("resolve-alias", _N, "R"),
    LongOpt("first-time", _N, "first-time"),
    LongOpt("ignore-install", _N, "i"),
    LongOpt("ignore-remove", _N, "i"),
    LongOpt("use-blacklist", _N, "b"),
    LongOpt("force", _N, "f"),
    LongOpt("force-modversion", _N, "force-modversion"),
    LongOpt("force-vermagic", _N, "force-vermagic"),
    LongOpt("show-depends", _N, "D"),
    LongOpt("showconfig", _N, "c"),
    LongOpt("show-config", _N, "c"),
    LongOpt("show-modversions", _N, "show-modversions"),
    LongOpt("dump-modversions", _N, "show-modversions"),
    LongOpt("show-exports", _N, "show-exports"),
    LongOpt("dry-run", _N, "n"),
    LongOpt("show", _N, "n"),
    LongOpt("config", _R, "C"),
    LongOpt("dirname", _R, "d"),
    LongOpt("set-version", _R, "S"),
    LongOpt("syslog", _N, "s"),
    LongOpt("quiet", _N, "q"),
    LongOpt("verbose", _N, "v"),
    LongOpt("version", _N, "V"),
    LongOpt("help", _N, "h"),
)

DEFAULT_VERBOSE = int(Priority.WARNING)

HELP = """Usage:
\t{p} [options] [-i] [-b] modulename
\t{p} [options] -a [-i] [-b] modulename [modulename...]
\t{p} [options] -r [-i] modulename
\t{p} [options] -r -a [-i] modulename [modulename...]
\t{p} [options] -c
\t{p} [options] --dump-modversions filename
Management Options:
\t-a, --all                   Consider every non-argument to
\t                            be a module name to be inserted
\t                            or removed (-r)
\t-r, --remove                Remove modules instead of inserting
\t    --remove-dependencies   Deprecated: use --remove-holders
\t    --remove-holders        Also remove module holders (use together with -r)
\t-w, --wait <MSEC>           When removing a module, wait up to MSEC for
\t                            module's refcount to become 0 so it can be
\t                            removed (use together with -r)
\t    --first-time            Fail if module already inserted or removed
\t-i, --ignore-install        Ignore install commands
\t-i, --ignore-remove         Ignore remove commands
\t-b, --use-blacklist         Apply blacklist to resolved alias.
\t-f, --force                 Force module insertion or removal.
\t                            implies --force-modversions and
\t                            --force-vermagic
\t    --force-modversion      Ignore module's version
\t    --force-vermagic        Ignore module's version magic

Query Options:
\t-R, --resolve-alias         Only lookup and print alias and exit
\t-D, --show-depends          Only print module dependencies and exit
\t-c, --showconfig            Print out known configuration and exit
\t-c, --show-config           Same as --showconfig
\t    --show-modversions      Dump module symbol version and exit
\t    --dump-modversions      Same as --show-modversions
\t    --show-exports          Only print module exported symbol versions and exit

General Options:
\t-n, --dry-run               Do not execute operations, just print out
\t-n, --show                  Same as --dry-run
\t-C, --config=FILE           Use FILE instead of default search paths
\t-d, --dirname=DIR           Use DIR as filesystem root for /lib/modules
\t-S, --set-version=VERSION   Use VERSION instead of `uname -r`
\t-s, --syslog                print to syslog, not stderr
\t-q, --quiet                 disable messages
\t-v, --verbose               enables more messages
\t-V, --version               show version
\t-h, --help                  show this help
"""

VERSION_TEXT = "kmodd version {version} (modprobe compatible with kmod 30)\n"


def split_modprobe_options(env: str) -> list[str]:
    """tools/modprobe.c: prepend_options_from_env's splitting, quirks and all.

    Words are split on single spaces (so two spaces make an empty word); a word that starts
    with a quote ends at the matching quote, and quotes inside a word are removed.
    """
    buf = list(env)
    out: list[str] = []
    start = 0
    quote = -1
    s = 0
    while s < len(buf):
        c = buf[s]
        if quote < 0:
            if c == " ":
                out.append("".join(buf[start:s]))
                start = s + 1
            elif c in "\"'":
                quote = s
        elif c == buf[quote]:
            if quote == start:
                out.append("".join(buf[start + 1 : s]))
                start = s + 1
                # the NUL written over the closing quote ends this word
                buf[s] = "\0"
            else:
                del buf[s]
                del buf[quote]
                s -= 2
            quote = -1
        s += 1
    if start < s:
        out.append("".join(buf[start:s]))
    # A word ending at a NUL written over a closing quote is followed by an empty one when
    # the next character is a space: "a" b -> a, "", b
    return [w.split("\0", 1)[0] for w in out]


ULONG_MAX = (1 << 64) - 1


def strtoul(text: str) -> int | None:
    """C strtoul(text, &end, 0) that must consume everything; None when it does not."""
    s = text.lstrip(" \t\n\v\f\r")
    neg = False
    if s[:1] in "+-" and s:
        neg = s[0] == "-"
        s = s[1:]
    base = 10
    if s[:2].lower() == "0x" and len(s) > 2 and s[2] in "0123456789abcdefABCDEF":
        base, s = 16, s[2:]
    elif s[:1] == "0":
        base = 8
    if not text or not s:
        return None if not text or (not s and base != 8) else 0
    try:
        value = int(s, base)
    except ValueError:
        return None
    value = min(value, ULONG_MAX)
    return (-value) & ULONG_MAX if neg else value


def options_from_array(args: Sequence[str]) -> str | None:
    """The module's own options from the command line, joined; values with spaces quoted."""
    parts: list[str] = []
    for arg in args[1:]:
        eq = arg.find("=")
        if eq >= 0:
            value = arg[eq + 1 :]
            if value[:1] not in ('"', "'") and " " in value:
                parts.append(f'{arg[: eq + 1]}"{value}"')
                continue
        parts.append(arg)
    if len(args) <= 1:
        return None
    return " ".join(parts)


class _Exit(Exception):
    """kmod's log_printf exits on FATAL; this carries the status out of the run."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Settings:
    """What the options said."""

    def __init__(self) -> None:
        self.use_all: bool = False
        self.remove: bool = False
        self.remove_holders: bool = False
        self.wait_msec: int = 0
        self.first_time: bool = False
        self.ignore_commands: bool = False
        self.use_blacklist: bool = False
        self.force: bool = False
        self.strip_modversion: bool = False
        self.strip_vermagic: bool = False
        self.ignore_loaded: bool = False
        self.dry_run: bool = False
        self.do_show: bool = False
        self.lookup_only: bool = False
        self.show_config: bool = False
        self.show_modversions: bool = False
        self.show_exports: bool = False
        self.config_paths: list[str] = []
        self.root: str | None = None
        self.kversion: str | None = None
        self.use_syslog: bool = False
        self.verbose: int = DEFAULT_VERBOSE
        self.log_priority: Priority = Priority.CRIT  # LOG(): FATAL, or WARNING under -a


class _Run:
    """One modprobe invocation."""

    def __init__(self, argv: Sequence[str], root: Root, stdout: BinaryIO, stderr: BinaryIO,
                 environ: Mapping[str, str], kernel: KernelPort | None = None) -> None:
        self.argv = list(argv)
        self.kernel = kernel
        self.root = root
        self.stdout = stdout
        self.stderr = stderr
        self._pending: list[bytes] = []  # stdio's buffer: printf'd, not yet flushed
        self.environ = dict(environ)
        self.prog = os.path.basename(argv[0]) if argv else "modprobe"
        # run() turned every argument and variable into one character per byte, as files are
        # read: messages go back out the same way.
        self.log = ToolLog(self.prog, stderr, encode=latin1)
        self.default_log = LibkmodDefaultLog(stderr, self.environ, encode=latin1)
        self.s = _Settings()
        self.moddir = ""
        self.real_moddir = ""
        self.resolver: Resolver | None = None

    # -- output helpers ------------------------------------------------------------------

    def out(self, text: str) -> None:
        """printf(): buffered like stdio, so a command run meanwhile writes before it."""
        self._pending.append(text.encode("latin-1", "replace"))

    def flush(self) -> None:
        if self._pending:
            self.stdout.write(b"".join(self._pending))
            self._pending.clear()

    def show(self, text: str) -> None:
        """SHOW(): printed (and flushed) only when showing or verbose."""
        if self.s.do_show or self.s.verbose > DEFAULT_VERBOSE:
            self.out(text)
            self.flush()

    def LOG(self, message: str) -> None:
        """log_printf at modprobe's LOG priority: FATAL ends the run (status 1)."""
        if self.s.log_priority > self.log.priority:
            return
        self.log.log(self.s.log_priority, message)
        if self.s.log_priority <= Priority.CRIT:
            raise _Exit(1)

    def libkmod(self, event: LibkmodEvent) -> None:
        """A libkmod message through modprobe's log function (with libkmod's ctx pointer)."""
        if CTX in event.text:
            event = LibkmodEvent(event.site, event.text.replace(CTX, hex(id(self))))
        self.log.libkmod(event)

    def env_append(self, value: str) -> None:
        old = self.environ.get("MODPROBE_OPTIONS")
        self.environ["MODPROBE_OPTIONS"] = value if old is None else f"{old} {value}"

    # -- the program -----------------------------------------------------------------------

    def main(self) -> int:
        argv = self.argv
        env_opts = self.environ.get("MODPROBE_OPTIONS")
        if env_opts is not None:
            argv = [argv[0], *split_modprobe_options(env_opts), *argv[1:]]
        parser = GetoptLong(argv, SHORT_OPTIONS, LONG_OPTIONS)
        s = self.s
        for item in parser:
            if isinstance(item, OptError):
                self.log.raw(item.message)
                return 1
            val, arg = item.key, item.value
            if val == "a":
                s.log_priority = Priority.WARNING
                s.use_all = True
            elif val == "r":
                s.remove = True
            elif val == "remove-holders":
                s.remove_holders = True
            elif val == "w":
                assert arg is not None
                value = strtoul(arg)
                if value is None:
                    self.log.err(f"unexpected wait value '{arg}'.\n")
                    return 1
                s.wait_msec = value
            elif val == "first-time":
                s.first_time = True
            elif val == "i":
                s.ignore_commands = True
            elif val == "b":
                s.use_blacklist = True
            elif val == "f":
                s.force = True
            elif val == "force-modversion":
                s.strip_modversion = True
            elif val == "force-vermagic":
                s.strip_vermagic = True
            elif val == "D":
                s.ignore_loaded = s.dry_run = s.do_show = True
            elif val == "R":
                s.lookup_only = True
            elif val == "c":
                s.show_config = True
            elif val == "show-modversions":
                s.show_modversions = True
            elif val == "show-exports":
                s.show_exports = True
            elif val == "n":
                s.dry_run = True
            elif val == "C":
                assert arg is not None
                s.config_paths.append(arg)
                self.env_append("-C")
                self.env_append(arg)
            elif val == "d":
                s.root = arg
            elif val == "S":
                s.kversion = arg
            elif val == "s":
                self.env_append("-s")
                s.use_syslog = True
            elif val == "q":
                self.env_append("-q")
                s.verbose = int(Priority.EMERG)
            elif val == "v":
                self.env_append("-v")
                s.verbose += 1
            elif val == "V":
                from kmodd import __version__

                self.out(VERSION_TEXT.format(version=__version__))
                return 0
            elif val == "h":
                self.out(HELP.format(p=self.prog))
                return 0
        args = parser.operands
        if not s.show_config and not args:
            self.log.err("missing parameters. See -h.\n")
            return 1
        self.moddir = module_dir(s.root or "", s.kversion or kernel_release())
        # Without -d, module files live under the root like everything else; -d DIR names a
        # directory as it is.
        self.real_moddir = self.moddir if s.root is not None else self.root.path(self.moddir)
        if s.use_syslog:
            self.log.open_syslog()
        config = self._load_config()
        self.log.priority = s.verbose  # log_setup_kmod_log: libkmod now logs through modprobe
        resolver = self._open(config)
        self.resolver = resolver
        if s.show_config:
            return self._show_config(config, resolver)
        if s.show_modversions or s.show_exports:
            status = self._show_symbols(args[0])
            return status
        if s.remove:
            return self._rmmod_all(resolver, args)
        if s.use_all:
            failed = [self._insmod(resolver, a, None) for a in args]
            return 1 if any(failed) else 0
        return 1 if self._insmod(resolver, args[0], options_from_array(args)) else 0

    def _load_config(self) -> Config:
        from kmodd.system.moddb import load_config

        config = load_config(self.root, self.moddir, self.s.config_paths or None,
                             real_moddir=self.real_moddir)
        for d in config.diagnostics:
            self.default_log(d.event())
        return config

    def _open(self, config: Config) -> Resolver:
        from kmodd.system.moddb import raw_indexes
        from kmodd.system.sysview import FileView

        indexes, problems = raw_indexes(self.moddir, self.real_moddir)
        self._report_index_problems(indexes, problems)
        files = FileView(self.root, files_under_root=self.s.root is None)
        return Resolver(indexes, config, files, log=self.libkmod)

    def _report_index_problems(self, indexes: object, problems: list[IndexProblem]) -> None:
        """What kmod_load_resources says: it maps the indexes in order and stops at the first
        one that fails (except modules.builtin.alias.bin), naming a bad magic or version.
        Damage deeper in a file, which kmod does not check, kmodd names with its offset."""
        bad = {p.role: p for p in problems}
        present = set(getattr(indexes, "_bins", {}))
        for role in INDEX_FILES:
            p = bad.get(role)
            if p is not None and p.kind == "magic":
                self.libkmod(LibkmodEvent(
                    "index_magic", f"magic check fail: {p.found:x} instead of {INDEX_MAGIC:x}\n"))
            elif p is not None and p.kind == "version":
                self.libkmod(LibkmodEvent(
                    "index_version",
                    f"major version check fail: {p.found} instead of {INDEX_VERSION_MAJOR}\n"))
            if role not in present and role != "builtin_alias":
                break

    # -- -c ------------------------------------------------------------------------------------

    def _show_config(self, config: Config, resolver: Resolver) -> int:
        lines: list[str] = []
        lines += [f"blacklist {b}\n" for b in config.blacklists]
        lines += [f"install {k} {v}\n" for k, v in config.installs]
        lines += [f"remove {k} {v}\n" for k, v in config.removes]
        lines += [f"alias {k} {v}\n" for k, v in config.aliases]
        lines += [f"options {k} {v}\n" for k, v in config.options]
        lines += [f"softdep {sd.name} {sd.text()}\n" for sd in config.softdeps]
        lines.append("\n# End of configuration files. Dumping indexes now:\n\n")
        self.out("".join(lines))
        for role in ("alias", "symbols"):
            self.out("".join(f"alias {k} {v}\n" for k, v in resolver.indexes.dump(role)))
        return 0

    def _show_symbols(self, filename: str) -> int:
        """--show-modversions / --show-exports: `0x%08x\t<symbol>` per entry."""
        from kmodd.core.modfile.elf import ElfError, parse_module
        from kmodd.system.modfile import map_module, module_image
        from kmodd.system.sysview import FileView

        files = FileView(self.root, files_under_root=self.s.root is None)
        abspath = filename if filename.startswith("/") else f"{files.cwd()}/{filename}"
        if files.stat_errno(abspath) or path_to_modname(filename) is None:
            self.LOG(f"Module {filename} not found.\n")
            return 1
        what = "modversions" if self.s.show_modversions else "symbols"
        real = self.root.path(abspath) if self.s.root is None and not self.root.is_host \
            else abspath
        raw = map_module(real)
        err = raw if isinstance(raw, int) else 0
        entries: list[tuple[int, str]] = []
        if not err:
            assert not isinstance(raw, int)
            image = module_image(raw)
            try:
                if isinstance(image, int):
                    err = image
                else:
                    entries, err = self._symbol_entries(parse_module(image, abspath))
            except ElfError as e:
                err = e.errno
        if err:
            self.LOG(f"could not get {what} of {filename}: {os.strerror(err)}\n")
            return 1
        self.out("".join(f"0x{crc:08x}\t{name}\n" for crc, name in entries))
        return 0

    def _symbol_entries(self, module: ModuleElf) -> tuple[list[tuple[int, str]], int]:
        """kmod_module_get_versions (a missing `__versions` is ENOENT, a ragged one EINVAL)
        or kmod_module_get_symbols (raises ElfError(ENOENT) without exports)."""
        from kmodd.core.modfile.elf import MODVERSION_RECORD_SIZE

        if not self.s.show_modversions:
            return [(e.crc, e.name) for e in module.exports()], 0
        section = module.section("__versions")
        if section is None:
            return [], errno.ENOENT
        if section.size % MODVERSION_RECORD_SIZE:
            return [], errno.EINVAL
        return [(v.crc, v.name.removeprefix(".")) for v in module.versions()], 0

    # -- inserting -----------------------------------------------------------------------------

    def _insmod(self, resolver: Resolver, alias: str, extra: str | None) -> int:
        """Probe `alias` as modprobe does; 0, or the errno of its last module's failure."""
        s = self.s
        try:
            mods = resolver.lookup(alias)
        except ModuleLookupError:
            mods = []
        if not mods:
            self.LOG(f"Module {alias} not found in directory {self.moddir}\n")
            return errno.ENOENT
        if s.lookup_only:
            self.out("".join(f"{mod.name}\n" for mod in mods))
            return 0
        from kmodd.core.kmod.plan import ProbeFlag, plan_probe

        flags = ProbeFlag(0)
        if s.strip_modversion or s.force:
            flags |= ProbeFlag.FORCE_MODVERSION
        if s.strip_vermagic or s.force:
            flags |= ProbeFlag.FORCE_VERMAGIC
        if s.ignore_commands:
            flags |= ProbeFlag.IGNORE_COMMAND
        if s.ignore_loaded:
            flags |= ProbeFlag.IGNORE_LOADED
        if s.dry_run:
            flags |= ProbeFlag.DRY_RUN
        flags |= ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY
        if s.use_blacklist:
            flags |= ProbeFlag.APPLY_BLACKLIST
        if s.first_time:
            flags |= ProbeFlag.FAIL_ON_LOADED
        show = self._print_action if (s.do_show or s.verbose > DEFAULT_VERBOSE) else None
        err = 0
        for mod in mods:
            plan = plan_probe(resolver, self.sysfs, mod, flags, extra)
            err = self._run(resolver, plan, flags, show)
            if err:
                self._insert_error(mod, err)
        return err

    def _run(self, resolver: Resolver, plan: Plan, flags: ProbeFlag,
             show: object) -> int:
        from kmodd.core.kmod.plan import ProbeFlag, run_plan
        from kmodd.system.actions import HostActions

        # Without -d, module files live under the root like everything else.
        files = self.root if self.s.root is None and not self.root.is_host else None
        actions = None if flags & ProbeFlag.DRY_RUN else HostActions(self, self._kernel(), files)
        return run_plan(self.sysfs, plan, flags, actions,
                        show=self._print_action if show else None)

    def _print_action(self, step: Step, install: bool, options: str) -> None:
        if install:
            self.out(f"install {step.command} {options}\n")
        elif step.path is not None:
            self.out(f"insmod {step.path} {options}\n")
        elif step.builtin:
            self.out(f"builtin {step.name}\n")

    def _insert_error(self, mod: Module, err: int) -> None:
        from kmodd.core.autoload.outcome import modprobe_insert_error

        self.log.err(modprobe_insert_error(mod.name, err))

    @functools.cached_property
    def sysfs(self) -> SysModules:
        """/sys/module as libkmod reads it (only loading and removing need it)."""
        from kmodd.system.modstate import SysModules

        return SysModules(self.root, self.libkmod)

    def _kernel(self) -> KernelPort:
        if self.kernel is None:
            from kmodd.system.kernel import LinuxKernel

            self.kernel = LinuxKernel(self.root)
        return self.kernel

    # -- removing -------------------------------------------------------------------------------

    def _rmmod_all(self, resolver: Resolver, args: Sequence[str]) -> int:
        from kmodd.core.kmod.remove import REMOVE_HOLDERS, RemoveOptions, remove
        from kmodd.system.actions import HostRemoval

        s = self.s
        io = HostRemoval(self, self._kernel(), self.sysfs, dry_run=s.dry_run, force=s.force,
                         wait_msec=s.wait_msec, first_time=s.first_time)
        opts = RemoveOptions(
            ignore_commands=s.ignore_commands,
            ignore_loaded=s.ignore_loaded,
            first_time=s.first_time,
            wait=s.wait_msec > 0,
        )
        flags = REMOVE_HOLDERS if s.remove_holders else 0
        failed = False
        for a in args:
            try:
                failed |= bool(remove(resolver, self.sysfs, io, a, flags, opts))
            except ModuleLookupError:
                failed = True
        return 1 if failed else 0


@reports_index_damage("modprobe")
def run(
    argv: Sequence[str],
    *,
    root: Root,
    stdout: BinaryIO,
    stderr: BinaryIO,
    environ: Mapping[str, str],
    kernel: KernelPort | None = None,
) -> int:
    """modprobe's main: returns the exit status (`kernel`: a simulated kernel for tests)."""
    # kmod sees bytes: give every argument and variable back the bytes it came as, one
    # character per byte, so that output writes them back unchanged.
    argv = [os.fsencode(a).decode("latin-1") for a in argv]
    environ = {os.fsencode(k).decode("latin-1"): os.fsencode(v).decode("latin-1")
               for k, v in environ.items()}
    r = _Run(argv, root, stdout, stderr, environ, kernel)
    try:
        return r.main()
    except _Exit as e:
        return e.status
    finally:
        r.flush()
        r.log.close()
