"""`rmmod [-f] [-s] [-v] MODULE...`: remove modules, with kmod 30's checks and messages.

Each argument that names an existing file is taken as a path (module name from its base
name), anything else as a module name. Unless `-f`, `check_module_inuse` runs first: builtin,
not loaded, held by other modules, in use, or no unloading support; then delete_module with
O_NONBLOCK (and O_TRUNC for -f). The exit code is 1 if any module failed.
"""

from __future__ import annotations

import errno as E
import os
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO

from kmodd.cli.gnuopt import Arg, GetoptLong, LongOpt, OptError
from kmodd.cli.kmodtool import (
    EXIT_FAILURE,
    EXIT_SUCCESS,
    VERSION_TEXT,
    ToolLog,
    fs_bytes,
    reports_index_damage,
)
from kmodd.core.autoload.outcome import libkmod_remove_error, rmmod_remove_error
from kmodd.core.kmod.index import RawIndexes
from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.libkmodlog import LibkmodEvent, Priority, strerror
from kmodd.core.kmod.normalize import modname_normalize
from kmodd.system.kernel import KernelPort, LinuxKernel
from kmodd.system.moddb import raw_indexes
from kmodd.system.modstate import SysModules
from kmodd.system.root import MODULE_DIRECTORY, Root, kernel_release

SHORT_OPTIONS = "fsvVwh"
LONG_OPTIONS = (
    LongOpt("force", Arg.NONE, "f"),
    LongOpt("syslog", Arg.NONE, "s"),
    LongOpt("verbose", Arg.NONE, "v"),
    LongOpt("version", Arg.NONE, "V"),
    LongOpt("help", Arg.NONE, "h"),
)

HELP = ("Usage:\n"
        "\t{prog} [options] modulename ...\n"
        "Options:\n"
        "\t-f, --force       forces a module unload and may crash your\n"
        "\t                  machine. This requires Forced Module Removal\n"
        "\t                  option in your kernel. DANGEROUS\n"
        "\t-s, --syslog      print to syslog, not stderr\n"
        "\t-v, --verbose     enables more messages\n"
        "\t-V, --version     show version\n"
        "\t-h, --help        show this help\n")

#: rmmod's starting verbosity (`DEFAULT_VERBOSE`); each -v adds one.
DEFAULT_VERBOSE = Priority.ERR

BuiltinLookup = Callable[[str], bool]


def default_builtin_lookup(root: Root) -> BuiltinLookup:
    """`kmod_lookup_alias_is_builtin`: the name in modules.builtin.bin of the running kernel."""
    opened: list[RawIndexes] = []

    def lookup(name: str) -> bool:
        if not opened:  # map the index only when a name needs it (never with -f)
            moddir = root.path(f"{MODULE_DIRECTORY}/{kernel_release()}")
            opened.append(raw_indexes(moddir)[0])
        return bool(opened[0].builtin(name))

    return lookup


def check_module_inuse(name: str, *, builtin: bool, modules: SysModules, log: ToolLog) -> int:
    """kmod's `check_module_inuse`: 0 when removable, else an errno."""
    state = InitState.BUILTIN if builtin else modules.initstate(name)
    if state is InitState.BUILTIN:
        log.err(f"Module {name} is builtin.\n")
        return E.ENOENT
    if state is None:
        log.err(f"Module {name} is not currently loaded\n")
        return E.ENOENT
    holders = modules.holders(name)
    if holders:
        log.err(f"Module {name} is in use by:")
        for holder in holders:
            log.raw(f" {holder}")
        log.raw("\n")
        return E.EBUSY
    refcnt = modules.refcnt(name)  # the use count, or minus an errno
    if refcnt > 0:
        log.err(f"Module {name} is in use\n")
        return E.EBUSY
    if refcnt == -E.ENOENT:
        log.err("Module unloading is not supported\n")
    return max(-refcnt, 0)


@reports_index_damage("rmmod")
def run(argv: Sequence[str], *, root: Root, stdout: BinaryIO, stderr: BinaryIO,
        environ: Mapping[str, str], kernel: KernelPort | None = None,
        builtin: BuiltinLookup | None = None) -> int:
    prog = os.path.basename(argv[0]) if argv else "rmmod"
    log = ToolLog(prog, stderr)
    force = False
    use_syslog = False
    verbose = int(DEFAULT_VERBOSE)
    parser = GetoptLong(argv, SHORT_OPTIONS, LONG_OPTIONS)
    for item in parser:
        if isinstance(item, OptError):
            stderr.write(fs_bytes(item.message))
            return EXIT_FAILURE
        match item.key:
            case "f":
                force = True
            case "s":
                use_syslog = True
            case "v":
                verbose += 1
            case "h":
                stdout.write(fs_bytes(HELP.format(prog=prog)))
                return EXIT_SUCCESS
            case "V":
                stdout.write(VERSION_TEXT)
                return EXIT_SUCCESS
            case other:
                log.err(f"unexpected getopt_long() value '{other}'.\n")
                return EXIT_FAILURE
    if use_syslog:
        log.open_syslog()
    try:
        if not parser.operands:
            log.err("missing module name.\n")
            return EXIT_FAILURE
        log.priority = verbose
        return _remove_all(parser.operands, force=force, log=log, root=root,
                           kernel=kernel if kernel is not None else LinuxKernel(root),
                           builtin=builtin or default_builtin_lookup(root))
    finally:
        log.close()


def _remove_all(args: Sequence[str], *, force: bool, log: ToolLog, root: Root,
                kernel: KernelPort, builtin: BuiltinLookup) -> int:
    modules = SysModules(root, log.libkmod)
    failures = 0
    for arg in args:
        from_path = os.path.exists(arg)
        if from_path:
            base = arg[arg.rfind("/") + 1:]
            if not base:
                log.err(f"could not use module {arg}: {strerror(E.ENOENT)}\n")
                break  # kmod stops here without counting a failure
            name = modname_normalize(base)
        else:
            name = modname_normalize(arg)
        if not force:
            is_builtin = not from_path and builtin(name)
            if check_module_inuse(name, builtin=is_builtin, modules=modules, log=log):
                failures += 1
                continue
        err = kernel.delete(name, force=force)
        if err:
            log.libkmod(LibkmodEvent("remove_failed", libkmod_remove_error(name, err)))
            log.err(rmmod_remove_error(arg, err))
            failures += 1
    return EXIT_SUCCESS if failures == 0 else EXIT_FAILURE
