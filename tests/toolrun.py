"""Run a kmodd front end in-process, or the real kmod tool, and get (rc, stdout, stderr)."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
