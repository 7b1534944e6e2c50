"""`depmod`: kmod 30's command line, messages and exit codes, over kmodd's depmod.

    depmod [-aA] [-b basedir] [-o outdir] [-C config] [-E Module.symvers | -F System.map]
           [-e] [-n] [-v] [-w] [-P c] [version] [files...]

Options are parsed the way glibc's getopt_long parses kmod's (permuted operands, unique
prefixes of long options, glibc's error texts). `-o/--outdir` is kmod 31's: kmod 30 lacks
it, kmodd accepts it so that an index can be built without touching the module tree.
Messages are `depmod: ERROR: ...` lines on stderr, shown when their level is at most
WARNING plus one per -v; -v also reports each dependency on stdout.
"""

from __future__ import annotations

import errno
import gc
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from kmodd.cli.kmodtool import reports_index_damage
from kmodd.core.depmod.build import (
    DepmodModule,
    DepmodOptions,
    FactsOptions,
    KernelSymbols,
    OutputEvent,
    depmod_module,
    modules_order,
    parse_symvers,
    parse_system_map,
    resolve_dependencies,
)
from kmodd.core.depmod.config import (
    DepmodConfig,
    FoundModule,
    Message,
    order_config_files,
    parse_config,
)
from kmodd.core.depmod.output import (
    BuildFile,
    in_output_order,
    render_graph_files,
    render_module_files,
)
from kmodd.core.kmod.libkmodlog import TOOL_PRIORITY_NAMES
from kmodd.core.priority import Priority
from kmodd.system import modtree
from kmodd.system.modtree import HostPaths, ModuleSearch, logical
from kmodd.system.root import DEPMOD_D_DIRS, MODULE_DIRECTORY, Root

EXIT_SUCCESS, EXIT_FAILURE = 0, 1
DEFAULT_LOG_LEVEL = Priority.WARNING
#: kmod 30's `-V`, except that kmodd reads .ko.gz (Debian's kmod 30 is built without zlib).
KMOD_VERSION_LINES = "kmod version 30\n+ZSTD +XZ +ZLIB +LIBCRYPTO -EXPERIMENTAL\n"

SHORT_OPTIONS = "aAb:o:C:E:F:euqrvnP:wmVh"
#: (long name, takes an argument, short equivalent), in kmod's table order.
LONG_OPTIONS: tuple[tuple[str, bool, str], ...] = (
    ("all", False, "a"), ("quick", False, "A"), ("basedir", True, "b"), ("outdir", True, "o"),
    ("config", True, "C"), ("symvers", True, "E"), ("filesyms", True, "F"),
    ("errsyms", False, "e"), ("unresolved-error", False, "u"), ("quiet", False, "q"),
    ("root", False, "r"), ("verbose", False, "v"), ("show", False, "n"),
    ("dry-run", False, "n"), ("symbol-prefix", True, "P"), ("warn", False, "w"),
    ("map", False, "m"), ("version", False, "V"), ("help", False, "h"),
)
DEPRECATED = "uqrm"

HELP = """Usage:
\t{prog} -[aA] [options] [forced_version]

If no arguments (except options) are given, "depmod -a" is assumed

depmod will output a dependency list suitable for the modprobe utility.

Options:
\t-a, --all            Probe all modules
\t-A, --quick          Only does the work if there's a new module
\t-e, --errsyms        Report not supplied symbols
\t-n, --show           Write the dependency file on stdout only
\t-P, --symbol-prefix  Architecture symbol prefix
\t-C, --config=PATH    Read configuration from PATH
\t-v, --verbose        Enable verbose mode
\t-w, --warn           Warn on duplicates
\t-V, --version        show version
\t-h, --help           show this help

The following options are useful for people managing distributions:
\t-b, --basedir=DIR    Use an image of a module tree.
\t-F, --filesyms=FILE  Use the file instead of the
\t                     current kernel symbols.
\t-E, --symvers=FILE   Use Module.symvers file to check
\t                     symbol versions.
"""


class UsageError(Exception):
    """A getopt error, already worded as glibc words it (without the program name)."""


def getopt_long(argv: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    """Yield (short option, argument, long name used or "") like glibc's getopt_long,
    then ("", operand, "") for each operand (operands are moved after the options)."""
    operands: list[str] = []
    takes = {c: SHORT_OPTIONS[i + 1 : i + 2] == ":" for i, c in enumerate(SHORT_OPTIONS)
             if c != ":"}
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            operands.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, has_value, value = arg[2:].partition("=")
            exact = [o for o in LONG_OPTIONS if o[0] == name]
            found = exact or [o for o in LONG_OPTIONS if o[0].startswith(name)]
            if not found:
                raise UsageError(f"unrecognized option '{arg}'")
            if len({(o[1], o[2]) for o in found}) > 1:
                names = " ".join(f"'--{o[0]}'" for o in found)
                raise UsageError(f"option '{arg}' is ambiguous; possibilities: {names}")
            long_name, needs_arg, short = found[0]
            if needs_arg and not has_value:
                if i >= len(argv):
                    raise UsageError(f"option '--{long_name}' requires an argument")
                value = argv[i]
                i += 1
            elif has_value and not needs_arg:
                raise UsageError(f"option '--{long_name}' doesn't allow an argument")
            yield short, value, long_name
            continue
        if arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                c = arg[j]
                j += 1
                if c not in takes:
                    raise UsageError(f"invalid option -- '{c}'")
                if not takes[c]:
                    yield c, "", ""
                    continue
                if j < len(arg):
                    value = arg[j:]
                elif i < len(argv):
                    value = argv[i]
                    i += 1
                else:
                    raise UsageError(f"option requires an argument -- '{c}'")
                yield c, value, ""
                break
            continue
        operands.append(arg)
    for operand in operands:
        yield "", operand, ""


@dataclass
class _Log:
    """depmod's log: `<prog>: <LEVEL>: <text>` on stderr, filtered by level."""

    prog: str
    stdout: BinaryIO
    stderr: BinaryIO
    level: int = DEFAULT_LOG_LEVEL

    def __call__(self, level: Priority, text: str) -> None:
        if level <= self.level:
            self.stderr.write(f"{self.prog}: {TOOL_PRIORITY_NAMES[level]}: {text}".encode(
                "latin-1"))

    def messages(self, messages: Sequence[Message]) -> bool:
        """Log each; True when one was fatal (kmod exits right there)."""
        for m in messages:
            self(m.level, m.text)
            if m.level <= Priority.CRIT:
                return True
        return False

    def events(self, events: Sequence[OutputEvent]) -> bool:
        for e in events:
            if e.message is not None:
                if self.messages([e.message]):
                    return True
            elif self.level > DEFAULT_LOG_LEVEL:
                self.stdout.write(e.show.encode("latin-1"))
        return False


@dataclass
class _Args:
    all: bool = False
    quick: bool = False
    basedir: str | None = None
    outdir: str | None = None
    config_paths: list[str] = field(default_factory=list)
    symvers: str | None = None
    system_map: str | None = None
    print_unknown: bool = False
    to_stdout: bool = False
    sym_prefix: str = ""
    warn_dups: bool = False
    operands: list[str] = field(default_factory=list)


def _absolute(path: str) -> str:
    """kmod's path_make_absolute_cwd: no normalisation, just the working directory."""
    return path if path.startswith("/") else f"{logical(os.getcwd())}/{path}"


@reports_index_damage("depmod")
def run(argv: Sequence[str], *, root: Root, stdout: BinaryIO, stderr: BinaryIO,
        environ: Mapping[str, str]) -> int:
    """depmod's main(): returns the exit status."""
    # A one-shot batch over ~10^6 short-lived objects with no reference cycles: the cyclic
    # collector would only rescan them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _run(argv, root=root, stdout=stdout, stderr=stderr)
    finally:
        if collecting:
            gc.enable()


def _run(argv: Sequence[str], *, root: Root, stdout: BinaryIO, stderr: BinaryIO) -> int:
    argv = [logical(a) for a in argv]
    prog = os.path.basename(argv[0]) if argv else "depmod"
    log = _Log(prog, stdout, stderr)
    args = _Args()
    try:
        for opt, value, long_name in getopt_long(argv):
            match opt:
                case "":
                    args.operands.append(value)
                case "a":
                    args.all = True
                case "A":
                    args.quick = True
                case "b":
                    args.basedir = _absolute(value)
                case "o":
                    args.outdir = _absolute(value)
                case "C":
                    args.config_paths.append(value)
                case "E":
                    args.symvers = value
                case "F":
                    args.system_map = value
                case "e":
                    args.print_unknown = True
                case "v":
                    log.level += 1
                case "n":
                    args.to_stdout = True
                case "P":
                    if len(value) != 1:
                        log(Priority.CRIT, "-P only takes a single char\n")
                        return EXIT_FAILURE
                    args.sym_prefix = value
                case "w":
                    args.warn_dups = True
                case "h":
                    stdout.write(HELP.format(prog=prog).encode("latin-1"))
                    return EXIT_SUCCESS
                case "V":
                    stdout.write(KMOD_VERSION_LINES.encode())
                    return EXIT_SUCCESS
                case _ if opt in DEPRECATED:
                    shown = f"--{long_name}" if long_name else f"-{opt}"
                    log(Priority.WARNING, f"Ignored deprecated option {shown}\n")
    except UsageError as exc:
        stderr.write(f"{argv[0]}: {exc}\n".encode("latin-1"))
        return EXIT_FAILURE
    return _depmod(args, log, HostPaths(root))


def _depmod(args: _Args, log: _Log, paths: HostPaths) -> int:
    operands = args.operands
    if operands:
        kversion = operands.pop(0)
        if not _is_version_number(kversion):
            log(Priority.ERR, f"Bad version passed {kversion}\n")
            return EXIT_FAILURE
    else:
        kversion = logical(os.uname().release)
    base = args.basedir or ""
    dirname = f"{base}{MODULE_DIRECTORY}/{kversion}"
    outdirname = f"{args.outdir if args.outdir is not None else base}{MODULE_DIRECTORY}/" \
                 f"{kversion}"
    do_all = args.all or not operands
    if args.quick:
        if args.to_stdout:
            return EXIT_SUCCESS
        state, messages = modtree.modules_up_to_date(paths, dirname)
        log.messages(messages)
        if state == 1:
            return EXIT_SUCCESS
        do_all = True

    kernel = _kernel_symbols(args, log, paths)
    if isinstance(kernel, int):
        return kernel
    print_unknown = args.print_unknown
    if kernel is None and print_unknown:
        log(Priority.WARNING, "-e needs -E or -F\n")
        print_unknown = False
    options = DepmodOptions(
        sym_prefix=args.sym_prefix, print_unknown=print_unknown,
        check_symvers=args.symvers is not None, warn_dups=args.warn_dups,
        verbose=log.level > DEFAULT_LOG_LEVEL, to_stdout=args.to_stdout)

    if do_all:
        cfg = _load_config(args, log, paths, kversion)
        found = _search(cfg, log, paths, dirname)
        if found is None:
            return EXIT_FAILURE
        modules = [depmod_module(f.abspath, dirname) for f in found]
    else:
        explicit = _explicit_modules(operands, log, paths, dirname)
        if explicit is None:
            return EXIT_FAILURE
        modules = explicit

    order = _build_file(paths, dirname, "modules.order")
    if order.data is None:
        log(Priority.WARNING, f"could not open modules.order at {dirname}: "
                           f"{os.strerror(order.errno)}\n")
    positions, messages = modules_order(modules, order.data, dirname)
    if log.messages(messages):
        return EXIT_FAILURE
    modules = [modules[i] for i in positions]

    facts_options = FactsOptions(args.sym_prefix, crcs=options.check_symvers,
                                 weak=options.print_unknown or options.check_symvers)
    facts = modtree.collect_facts(paths, modules, facts_options)
    builtin = _build_file(paths, dirname, "modules.builtin")
    builtin_modinfo = _build_file(paths, dirname, "modules.builtin.modinfo")
    # The files that need no dependency graph are rendered in a child meanwhile.
    module_files = modtree.Forked(lambda: render_module_files(
        modules, facts, builtin, builtin_modinfo, dirname, options))
    graph, events = resolve_dependencies(modules, facts, kernel, options)
    if log.events(events) or graph is None:
        module_files.cancel()
        return EXIT_FAILURE
    rendered = in_output_order([*render_graph_files(modules, graph, options),
                                *module_files.result()])
    if args.to_stdout:
        for f in rendered:
            if log.events(f.events) or f.data is None:
                return EXIT_FAILURE
            log.stdout.write(f.data)
        return EXIT_SUCCESS
    err = modtree.make_output_dir(paths, outdirname)
    if err:
        log(Priority.CRIT, f"could not create directory {outdirname}: {os.strerror(err)}\n")
        return EXIT_FAILURE
    writer = modtree.OutputWriter(paths, outdirname)
    for f in rendered:
        if log.events(f.events) or f.data is None:
            return EXIT_FAILURE
        if log.messages(writer.write(f.name, f.data)) or writer.stopped:
            return EXIT_FAILURE
    return EXIT_SUCCESS


def _is_version_number(text: str) -> bool:
    """kmod's `sscanf(version, "%u.%u")` test: two numbers around a dot at the start."""
    return re.match(r"\s*[+-]?\d+\.\s*[+-]?\d+", text) is not None


def _kernel_symbols(args: _Args, log: _Log, paths: HostPaths) -> KernelSymbols | int | None:
    """Module.symvers (-E) or System.map (-F); an exit status when it cannot be read."""
    source = args.symvers if args.symvers is not None else args.system_map
    if source is None:
        return None
    data, err = modtree.read_file(paths, source)
    if data is None:
        log(Priority.CRIT, f"could not load {source}: {os.strerror(err)}\n")
        return EXIT_FAILURE
    parse = parse_symvers if args.symvers is not None else parse_system_map
    kernel = parse(data, source, args.sym_prefix)
    log.messages(kernel.messages)
    return kernel


def _load_config(args: _Args, log: _Log, paths: HostPaths, kversion: str) -> DepmodConfig:
    config_paths = args.config_paths or list(DEPMOD_D_DIRS)
    files, messages = order_config_files(modtree.list_config(paths, config_paths))
    log.messages(messages)
    contents: list[tuple[str, bytes | None]] = []
    for path in files:
        data, err = modtree.read_file(paths, path)
        if data is None:
            log(Priority.ERR, f"file parse {path}: {os.strerror(err)}\n")
        contents.append((path, data))
    cfg = parse_config(contents, kversion)
    log.messages(cfg.messages)
    return cfg


def _search(cfg: DepmodConfig, log: _Log, paths: HostPaths,
            dirname: str) -> list[FoundModule] | None:
    search = ModuleSearch(cfg, dirname)
    err = modtree.search_modules(paths, search, dirname)
    log.messages(search.messages)
    if err:
        log(Priority.CRIT, f"could not search modules: {os.strerror(err)}\n")
        return None
    for ext in cfg.externals:  # kmod's prepended list: the last config line first
        search.messages.clear()
        modtree.search_modules(paths, search, ext)
        log.messages(search.messages)
    return list(search.by_name.values())


def _explicit_modules(operands: Sequence[str], log: _Log, paths: HostPaths,
                      dirname: str) -> list[DepmodModule] | None:
    modules: dict[str, DepmodModule] = {}
    for path in operands:
        if not path.startswith("/"):
            log(Priority.CRIT, f"{path}: not absolute path.\n")
            return None
        err = modtree.stat_errno(paths, path)
        if err:
            log(Priority.CRIT, f"could not create module {path}: {os.strerror(err)}\n")
            return None
        module = depmod_module(path, dirname)
        if module.modname in modules:
            log(Priority.ERR, f"hash_add_unique {module.modname}: {os.strerror(errno.EEXIST)}\n")
            log(Priority.CRIT, f"could not add module {path}: {os.strerror(errno.EEXIST)}\n")
            return None
        modules[module.modname] = module
    return list(modules.values())


def _build_file(paths: HostPaths, dirname: str, name: str) -> BuildFile:
    """A file of the kernel build in the module directory, or why it could not be read."""
    data, err = modtree.read_file(paths, f"{dirname}/{name}")
    return BuildFile(name, data, err)
