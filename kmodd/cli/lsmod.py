"""`lsmod`: the loaded modules, as kmod 30's `tools/lsmod.c` prints them.

Names come from /proc/modules in kernel order, the size from `coresize` (else /proc/modules),
the use count from `refcnt`, the holders from `holders/` in readdir order:
`%-19s %8ld  %d` then ` holder,holder` and a newline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import BinaryIO

from kmodd.cli.kmodtool import (
    EXIT_FAILURE,
    EXIT_SUCCESS,
    LibkmodDefaultLog,
    fs_bytes,
    latin1,
    reports_index_damage,
)
from kmodd.core.kmod.libkmodlog import strerror
from kmodd.system.modstate import SysModules
from kmodd.system.root import Root

HEADER = b"Module                  Size  Used by\n"


@reports_index_damage("lsmod")
def run(argv: Sequence[str], *, root: Root, stdout: BinaryIO, stderr: BinaryIO,
        environ: Mapping[str, str]) -> int:
    """lsmod takes no arguments; it prints the table or says why it cannot."""
    if len(argv) != 1:
        stderr.write(b"Usage: " + fs_bytes(argv[0] if argv else "lsmod") + b"\n")
        return EXIT_FAILURE
    log = LibkmodDefaultLog(stderr, environ)
    modules = SysModules(root, log)
    names = modules.loaded_names()
    if isinstance(names, int):
        stderr.write(f"Error: could not get list of modules: {strerror(names)}\n".encode())
        return EXIT_FAILURE
    stdout.write(HEADER)
    for name in names:
        use_count = modules.refcnt(name)
        size = modules.size(name)
        row = f"{name:<19} {size:8d}  {use_count}"
        holders = modules.holders(name) or []
        if holders:
            row += " " + ",".join(holders)
        stdout.write(latin1(row + "\n"))
    return EXIT_SUCCESS
