"""`insmod FILE [ARGS]`: insert one module file, with kmod 30's messages and exit codes.

`-f` forces both vermagic and modversions; `-p` and `-s` are accepted and ignored; the module
arguments are joined with single spaces. Failures print `insmod: ERROR: could not insert
module FILE: <mod_strerror>`; a file that cannot be used at all prints `could not load module`.
"""

from __future__ import annotations

import errno as E
import os
from collections.abc import Mapping, Sequence
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
from kmodd.core.autoload.outcome import insmod_insert_error
from kmodd.core.kmod.libkmodlog import strerror
from kmodd.system.kernel import KernelPort, LinuxKernel
from kmodd.system.root import Root

SHORT_OPTIONS = "psfVh"
LONG_OPTIONS = (LongOpt("version", Arg.NONE, "V"), LongOpt("help", Arg.NONE, "h"))

HELP = ("Usage:\n"
        "\t{prog} [options] filename [args]\n"
        "Options:\n"
        "\t-V, --version     show version\n"
        "\t-h, --help        show this help\n")


def module_file_errno(path: str) -> int:
    """Why kmod_module_new_from_path would refuse `path` (0 when it accepts it)."""
    try:
        os.stat(path)
    except OSError as err:
        return err.errno or E.ENOENT
    # GNU basename(): everything after the last slash; empty for a trailing slash.
    if not path[path.rfind("/") + 1:]:
        return E.ENOENT
    return 0


@reports_index_damage("insmod")
def run(argv: Sequence[str], *, root: Root, stdout: BinaryIO, stderr: BinaryIO,
        environ: Mapping[str, str], kernel: KernelPort | None = None) -> int:
    prog = os.path.basename(argv[0]) if argv else "insmod"
    log = ToolLog(prog, stderr)
    force = False
    parser = GetoptLong(argv, SHORT_OPTIONS, LONG_OPTIONS)
    for item in parser:
        if isinstance(item, OptError):
            stderr.write(fs_bytes(item.message))
            return EXIT_FAILURE
        if item.key == "f":
            force = True
        elif item.key == "h":
            stdout.write(fs_bytes(HELP.format(prog=prog)))
            return EXIT_SUCCESS
        elif item.key == "V":
            stdout.write(VERSION_TEXT)
            return EXIT_SUCCESS
    operands = parser.operands
    if not operands:
        log.err("missing filename.\n")
        return EXIT_FAILURE
    filename = operands[0]
    if filename == "-":
        log.err("this tool does not support loading from stdin!\n")
        return EXIT_FAILURE
    options = " ".join(operands[1:])
    refused = module_file_errno(filename)
    if refused:
        log.err(f"could not load module {filename}: {strerror(refused)}\n")
        return EXIT_FAILURE
    port = kernel if kernel is not None else LinuxKernel(root)
    result = port.insert(filename, options, force_vermagic=force, force_modversion=force)
    if not result.ok:
        log.err(insmod_insert_error(filename, result.errno))
        return EXIT_FAILURE
    return EXIT_SUCCESS
