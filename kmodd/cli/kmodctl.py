"""`kmodctl`: the admin's command, and a multi-call front end for the kmod tools.

`kmodctl modprobe ARGS` runs the kmod-compatible modprobe; so does a link to kmodctl named
`modprobe`. Every front end lives in `kmodd/cli/<tool>.py` and exposes

    run(argv, *, root, stdout, stderr, environ) -> int

with `argv[0]` the program name and binary streams, so tests call it in-process. Modules are
imported only when their command runs: a one-shot `modprobe` must start fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from kmodd.system.root import Root


@dataclass(frozen=True, slots=True)
class Tool:
    """A kmod-compatible front end: its module, what it does (kmodctl(8)), and whether its
    operands are module names (shell completion)."""

    module: str
    summary: str
    takes_modules: bool


#: Front ends reachable as `kmodctl TOOL` and through a link named TOOL.
KMOD_TOOLS: Mapping[str, Tool] = {
    "modprobe": Tool("kmodd.cli.modprobe",
                     "add or remove modules with their dependencies", True),
    "depmod": Tool("kmodd.cli.depmod",
                   "write modules.dep and the other index files", False),
    "modinfo": Tool("kmodd.cli.modinfo", "show what a module file declares",
                    True),
    "insmod": Tool("kmodd.cli.insmod", "insert one module file", False),
    "rmmod": Tool("kmodd.cli.rmmod", "remove a loaded module", True),
    "lsmod": Tool("kmodd.cli.lsmod", "list the loaded modules", False),
}

#: Admin commands that talk to the running daemon (kmodd/cli/client.py).
CLIENT_MODULE = "kmodd.cli.client"

#: Environment variable that moves every system path under a prefix (tests, chroots).
ROOT_ENV = "KMODD_ROOT"

EXIT_USAGE = 2


class FrontEnd(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        *,
        root: Root,
        stdout: BinaryIO,
        stderr: BinaryIO,
        environ: Mapping[str, str],
    ) -> int: ...


def _front_end(module: str) -> FrontEnd:
    run: FrontEnd = importlib.import_module(module).run
    return run


def dispatch(
    argv: Sequence[str],
    *,
    root: Root,
    stdout: BinaryIO,
    stderr: BinaryIO,
    environ: Mapping[str, str],
) -> int:
    """Run the tool that argv names (by argv[0]'s basename, or `kmodctl TOOL ...`)."""
    prog = os.path.basename(argv[0]) if argv else "kmodctl"
    if prog in KMOD_TOOLS:
        return _front_end(KMOD_TOOLS[prog].module)(
            [prog, *argv[1:]], root=root, stdout=stdout, stderr=stderr, environ=environ
        )
    if len(argv) >= 2 and argv[1] in KMOD_TOOLS:
        tool = argv[1]
        return _front_end(KMOD_TOOLS[tool].module)(
            [tool, *argv[2:]], root=root, stdout=stdout, stderr=stderr, environ=environ
        )
    return _front_end(CLIENT_MODULE)(
        ["kmodctl", *argv[1:]], root=root, stdout=stdout, stderr=stderr, environ=environ
    )


def main() -> int:
    """Console entry point."""
    environ = os.environ
    root = Root(environ.get(ROOT_ENV) or "/")
    stdout = sys.stdout.buffer
    try:
        return dispatch(
            sys.argv, root=root, stdout=stdout, stderr=sys.stderr.buffer, environ=environ
        )
    finally:
        try:
            stdout.flush()
        except BrokenPipeError:
            # The reader went away (`modprobe -c | head`): like kmod, say nothing.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
