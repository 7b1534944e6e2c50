"""Run a kmodd front end in-process, or the real kmod tool, and get (rc, stdout, stderr)."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from kmodd.system.root import Root


@dataclass(frozen=True)
class Ran:
    rc: int
    out: bytes
    err: bytes


def kmodd_tool(argv: Sequence[str], *, root: Root | None = None,
               environ: Mapping[str, str] | None = None, **extra: Any) -> Ran:
    """`argv[0]` names the tool (`modinfo`, `lsmod`, ...); extra keywords go to its run()."""
    module = importlib.import_module(f"kmodd.cli.{os.path.basename(argv[0])}")
    out, err = io.BytesIO(), io.BytesIO()
    rc = module.run(list(argv), root=root or Root(), stdout=out, stderr=err,
                    environ=dict(os.environ if environ is None else environ), **extra)
    return Ran(rc, out.getvalue(), err.getvalue())


def real_tool(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: str | None = None) -> Ran:
    """The installed kmod tool (the oracle); `env` is added to the current environment."""
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.run(list(argv), capture_output=True, env=full_env,
                          cwd=cwd)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def can_mask_host() -> bool:
    """True when tests may bind a fake root over /proc and /sys/module (root and unshare)."""
    import shutil

    return os.geteuid() == 0 and shutil.which("unshare") is not None


#: The mark of a test that shows the real kmod a fake root in a private mount namespace
#: (`unshare -m` and bind mounts over /proc/cmdline, /sys/module, modprobe.d...: paths the
#: real tools read whatever their options say). Only root may do that; others skip the test.
needs_mount_namespace = pytest.mark.skipif(
    not can_mask_host(),
    reason="runs the real kmod in a mount namespace over the paths it always reads "
           "(needs root and unshare)")


def real_tool_in_root(argv: Sequence[str], root: Root,
                      binds: Sequence[str] = ("/proc", "/sys/module")) -> Ran:
    """Run the real kmod tool in a private mount namespace with `binds` taken from `root`.

    This is how the real lsmod and rmmod are made to read a fake /proc/modules and
    /sys/module (they have no option for another root).
    """
    mounts = " && ".join(f'mount --bind "{root.path(b)}" "{b}"' for b in binds)
    script = f'{mounts} && exec "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv],
                          capture_output=True)
    return Ran(proc.returncode, proc.stdout, proc.stderr)
