"""Client explanations, each in a worker process: bounded in number, time, memory and output.

`Explainer.explain` runs `kmodd.system.explain_worker` for one target and returns the
explanation. At most `ExplainLimits.workers` run at once and `waiting` more may wait for a
turn; beyond that a caller is told `ExplainBusy` at once, never queued without bound. A worker
that misses its deadline is killed with its whole process group (`ExplainTimeout`); one that
fails or writes something that is not an explanation gives `ExplainFailed`. `close()` kills
every worker still running (the daemon's stop never waits for client work).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass

import kmodd
from kmodd.core.explain.facts import FailedAttempt
from kmodd.core.explain.model import Explanation, ExplanationFormatError, from_json
from kmodd.system.explain_worker import encode_request

#: Where the kmodd package is imported from, for the worker's interpreter.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(kmodd.__file__)))
#: The worker's command line: isolated mode (no PYTHON* variables, no user site), then
#: this kmodd.
WORKER_ARGV = (sys.executable, "-I", "-c",
               f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); "
               "from kmodd.system.explain_worker import main; sys.exit(main())")
#: Environment of a worker: nothing of the daemon's (sockets, credentials) is passed on.
WORKER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


class ExplainBusy(Exception):
    """Every worker slot and waiting place is taken."""


class ExplainTimeout(Exception):
    """The worker did not answer within the deadline and was killed."""


class ExplainFailed(Exception):
    """The worker failed, or answered something that is not an explanation."""


@dataclass(frozen=True, slots=True)
class ExplainLimits:
    #: Workers running at once.
    workers: int = 1
    #: Calls that may wait for a worker; more are told ExplainBusy.
    waiting: int = 4
    #: Seconds one worker may take, from its start.
    deadline: float = 30.0
    #: Largest answer read from a worker, in bytes.
    max_output: int = 4 * 1024 * 1024


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await stream.read(65536):
        data += chunk
        if len(data) > limit:
            raise ExplainFailed(f"the worker wrote more than {limit} bytes")
    return bytes(data)


class Explainer:
    """Runs explanation workers for the control plane."""

    def __init__(self, root: str, limits: ExplainLimits | None = None,
                 argv: tuple[str, ...] = WORKER_ARGV) -> None:
        self.root = root
        self.argv = argv  # tests run stand-in workers
        self.limits = limits or ExplainLimits()
        self._slots = asyncio.Semaphore(self.limits.workers)
        self._running: set[asyncio.subprocess.Process] = set()
        self._closed = False
        self._admitted = 0  # calls running or waiting for a worker

    async def explain(self, target: str, *, moddir: str, failure: FailedAttempt | None,
                      read_log: bool) -> Explanation:
        """The explanation of `target`; raises ExplainBusy, ExplainTimeout or ExplainFailed."""
        if self._closed or self._admitted >= self.limits.workers + self.limits.waiting:
            raise ExplainBusy
        self._admitted += 1
        try:
            async with self._slots:
                return await self._run(encode_request(
                    target=target, root=self.root, moddir=moddir, failure=failure,
                    read_log=read_log))
        finally:
            self._admitted -= 1

    async def _run(self, request: bytes) -> Explanation:
        if self._closed:
            raise ExplainBusy
        proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=WORKER_ENV, process_group=0)
        self._running.add(proc)
        try:
            async with asyncio.timeout(self.limits.deadline):
                out, err = await self._exchange(proc, request)
                status = await proc.wait()
        except TimeoutError:
            raise ExplainTimeout(f"no answer within {self.limits.deadline:g} s") from None
        finally:
            self._running.discard(proc)
            if proc.returncode is None:
                _kill_group(proc)
                await proc.wait()
        if status != 0:
            reason = err.decode(errors="replace").strip().splitlines()
            raise ExplainFailed(reason[-1] if reason else f"the worker exited with {status}")
        try:
            return from_json(json.loads(out))
        except (ValueError, ExplanationFormatError) as e:
            raise ExplainFailed(f"the worker's answer is not an explanation: {e}") from None

    async def _exchange(self, proc: asyncio.subprocess.Process,
                        request: bytes) -> tuple[bytes, bytes]:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(request)
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        limit = self.limits.max_output
        out, err = await asyncio.gather(_read_capped(proc.stdout, limit),
                                        _read_capped(proc.stderr, limit))
        return out, err

    def close(self) -> int:
        """Refuse new work and kill every running worker; how many were killed."""
        self._closed = True
        running = list(self._running)
        for proc in running:
            _kill_group(proc)
        return len(running)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
