"""`$MODPROBE` for tests: kmodd's modprobe front end in a process of its own.

An install command such as `$MODPROBE --ignore-install mod-loop-b` starts a new modprobe.
In a test that new process must see the same fake root (`KMODD_ROOT`) and load into the same
simulated kernel as the test itself: it reaches the test's `FakeKernel` through the socket
named by `KMODD_TEST_KERNEL_SOCKET` (tests/fakes.py: SyscallServer, SocketSyscalls).
`nested_modprobe_command(tmp_dir)` writes the executable a test puts into `$MODPROBE`.
"""

from __future__ import annotations

import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def nested_modprobe_command(directory: str) -> str:
    """Write `<directory>/modprobe`, a script that runs this file with this Python."""
    path = os.path.join(directory, "modprobe")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.abspath(__file__)}" "$@"\n')
    os.chmod(path, 0o755)
    return path


def main() -> int:
    sys.path.insert(0, os.path.dirname(TESTS_DIR))
    from kmodd.cli.kmodctl import ROOT_ENV
    from kmodd.cli.modprobe import run
    from kmodd.system.kernel import LinuxKernel
    from kmodd.system.root import Root
    from tests.fakes import KERNEL_SOCKET_ENV, SocketSyscalls

    root = Root(os.environ[ROOT_ENV])
    kernel = LinuxKernel(root, syscalls=SocketSyscalls(os.environ[KERNEL_SOCKET_ENV]))
    status = run(["modprobe", *sys.argv[1:]], root=root, stdout=sys.stdout.buffer,
                 stderr=sys.stderr.buffer, environ=os.environ, kernel=kernel)
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
