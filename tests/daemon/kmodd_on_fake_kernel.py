"""`kmodd` as the unit starts it, but loading into the simulated kernel under its `--root`.

The whole-daemon tests run this file as the daemon's process: it is `kmodd.daemon.main.main`
with the command line it is given, and only the kernel port swapped for `tests/fakes.py`'s
simulated kernel (serialised as the real kernel serialises module loading).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from kmodd.daemon.main import main  # noqa: E402
from kmodd.system.root import Root  # noqa: E402
from tests.daemon.daemon_tree import fake_kernel  # noqa: E402
from tests.fakes import GatedSyscalls  # noqa: E402


def _root(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--root="):
            return arg.split("=", 1)[1]
        if arg == "--root" and i + 1 < len(argv):
            return argv[i + 1]
    raise SystemExit("kmodd_on_fake_kernel.py needs --root")


if __name__ == "__main__":
    args = sys.argv[1:]
    kernel = GatedSyscalls(fake_kernel(Root(_root(args)))).port()
    sys.exit(main(["kmodd", *args], kernel=kernel))
