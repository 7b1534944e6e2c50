"""kmodd's side of the differential tests: the same `Case`s, run by kmodd instead of kmod.

* `run_inprocess(case, root)` calls `kmodd.cli.modprobe.run(argv, root=Root(root), stdout=...,
  stderr=..., environ=...)` with captured byte streams (the front end's entry point);
* `run_command(case, root)` runs the installed `kmodctl modprobe ARGS` with `KMODD_ROOT=root`;
* `run_symlink(case, root, link)` runs a symlink named `modprobe` that points at `kmodctl`.

A crash is a result too (exit code `RC_CRASH`, the traceback on stderr), so one bad case shows
up as one mismatch instead of stopping a suite.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from .kmodrun import Case, Result

#: Exit code recorded when kmodd raised instead of returning.
RC_CRASH = -2000
#: Seconds one installed-command case may take.
COMMAND_TIMEOUT = 60.0
#: Below this many cases the in-process runs stay in this process.
PARALLEL_MIN_CASES = 200
#: Work pieces per worker process (small enough to even out, large enough to be cheap).
CHUNKS_PER_WORKER = 8


@contextlib.contextmanager
def _cwd(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_inprocess(case: Case, root: str) -> Result:
    """One case through kmodd's modprobe front end, in this process."""
    from kmodd.cli.modprobe import run
    from kmodd.system.root import Root

    out, err = io.BytesIO(), io.BytesIO()
    try:
        with _cwd(case.cwd):
            rc = run(list(case.argv), root=Root(root), stdout=out, stderr=err,
                     environ=case.environ())
    except SystemExit as exc:  # a front end may exit like the C tool does
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        rc = RC_CRASH
        err.write(traceback.format_exc().encode())
    return Result(rc, out.getvalue(), err.getvalue())


def _run_chunk(chunk: Sequence[Case], root: str) -> list[Result]:
    return [run_inprocess(c, root) for c in chunk]


def run_inprocess_many(cases: Sequence[Case], root: str, *,
                       workers: int | None = None) -> list[Result]:
    """`run_inprocess` for many cases, split over forked worker processes (one per CPU).

    Each worker is a fork of this process, so it shares what kmodd has imported; results come
    back in case order. With one CPU (or few cases) everything runs here.
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(cases) < PARALLEL_MIN_CASES:
        return _run_chunk(cases, root)
    size = -(-len(cases) // (workers * CHUNKS_PER_WORKER))
    chunks = [cases[i : i + size] for i in range(0, len(cases), size)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        parts = pool.map(_run_chunk, chunks, [root] * len(chunks))
        return [r for part in parts for r in part]


def kmodctl_path() -> str:
    """The installed `kmodctl` console script itself.

    It is looked for next to this Python first: a wrapper found on PATH (a pyenv shim) picks
    the program by its own name, so a `modprobe` symlink to it would run the real kmod.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "kmodctl")
    path = beside if os.access(beside, os.X_OK) else shutil.which("kmodctl")
    if path is None:
        raise FileNotFoundError("kmodctl is not installed (pip install -e .)")
    with open(path, "rb") as f:
        shebang = f.readline()
    if not (shebang.startswith(b"#!") and b"python" in shebang):
        raise RuntimeError(f"{path} is not kmodctl's Python console script ({shebang!r})")
    return path


def run_command(case: Case, root: str) -> Result:
    """One case through the installed `kmodctl modprobe` command."""
    argv = [kmodctl_path(), "modprobe", *case.argv[1:]]
    return _run(argv, None, case, root)


def run_symlink(case: Case, root: str, link: str) -> Result:
    """One case through `link`, a symlink named `modprobe` to kmodctl (argv[0] decides)."""
    return _run(["modprobe", *case.argv[1:]], link, case, root)


def _run(argv: list[str], executable: str | None, case: Case, root: str) -> Result:
    env = case.environ()
    env["KMODD_ROOT"] = root
    proc = subprocess.run(argv, executable=executable, env=env, cwd=case.cwd,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=COMMAND_TIMEOUT, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_many_commands(cases: Sequence[tuple[Case, str]], *, link: str | None = None,
                      workers: int | None = None) -> list[Result]:
    """Run (case, root) pairs through the installed command, in parallel, results in order."""
    def one(item: tuple[Case, str]) -> Result:
        case, root = item
        return run_symlink(case, root, link) if link else run_command(case, root)

    with ThreadPoolExecutor(max_workers=workers or (os.cpu_count() or 1) + 1) as pool:
        return list(pool.map(one, cases))
