"""No client can starve the daemon's own work: clients' questions run in worker processes.

Attack: clients flood `Explain` with questions whose answer never comes (the explanation's
worker hangs, as a read of a hung file system would). The daemon's own work must go on as if
nothing happened: a reload (SIGHUP's path), a resync from sysfs and the stop all end
promptly, and no worker outlives the stop; the clients beyond the explainer's bound are told
the daemon is busy, and a question past its deadline is answered with a timeout.
"""

from __future__ import annotations

import ast
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kmodd.daemon.service import Daemon
from kmodd.system.explainer import Explainer, ExplainLimits
from kmodd.system.root import Root
from tests.daemon.daemon_tree import (
    MACHINE_MODULES,
    RunningDaemon,
    wait_until,
    write_sysfs,
    write_tree,
)
from tests.fakes import FakeUeventSource

REPO = Path(__file__).resolve().parents[2]
#: Clients asking at once: more than the client pool holds, and more than asyncio's default
#: executor has threads on a small machine (min(32, CPUs + 4)).
CLIENTS = 12
#: Seconds the daemon's own work may take while clients are stuck (it takes milliseconds).
PROMPTLY = 5.0


@pytest.fixture
def root(tmp_path: Path) -> Root:
    base = tmp_path / "root"
    tree = write_tree(base, MACHINE_MODULES)
    write_sysfs(base)
    return tree


#: A stand-in explain worker: records its pid, then hangs until killed.
HANGING_WORKER = """
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\\n")
time.sleep(600)
"""
LIMITS = ExplainLimits()


@pytest.fixture
def pidfile(tmp_path: Path) -> Path:
    return tmp_path / "worker-pids"


def hang_explanations(daemon: Daemon, pidfile: Path, limits: ExplainLimits = LIMITS) -> None:
    """Every explanation of `daemon` from now on runs a worker that never answers."""
    control = daemon.start_control()
    control.explainer = Explainer(daemon.root.path("/"), limits,
                                  argv=(sys.executable, "-c", HANGING_WORKER, str(pidfile)))


def running(pidfile: Path) -> list[int]:
    """The stand-in workers that are still alive (not even zombies)."""
    pids = [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


async def _ask(path: str, method: str, parameters: dict[str, Any]
               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(json.dumps({"method": method, "parameters": parameters}).encode() + b"\0")
    await writer.drain()
    return reader, writer


async def _reply(reader: asyncio.StreamReader, timeout: float) -> dict[str, Any] | None:
    """The next reply, or None if none comes within `timeout` seconds."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\0"), timeout)
    except TimeoutError:
        return None
    reply: dict[str, Any] = json.loads(raw[:-1])
    return reply


def test_reload_resync_and_stop_never_wait_behind_clients_stuck_in_explain(
        root: Root, pidfile: Path) -> None:
    async def scenario() -> None:
        runner = RunningDaemon(root, source=FakeUeventSource())
        daemon = await runner.__aenter__()
        hang_explanations(daemon, pidfile)
        connections = []
        try:
            for i in range(CLIENTS):
                connections.append(await _ask(runner.socket_path, "io.kmodd.Explain",
                                              {"module": f"kmodd_stuck_{i}"}))
            replies = await asyncio.gather(*(_reply(reader, 1.0) for reader, _ in connections))
            held = LIMITS.workers + LIMITS.waiting
            assert replies.count(None) == held  # running or waiting, never answered
            assert [r for r in replies if r is not None] == [
                {"error": "io.kmodd.Busy", "parameters": {"reason": (
                    f"kmodd is busy answering other clients' questions ({LIMITS.workers} "
                    f"running, {LIMITS.waiting} waiting); try again in a moment")}}
            ] * (CLIENTS - held)

            daemon.request_reload()  # what SIGHUP does
            await wait_until(lambda: daemon.snapshots.current.generation == 2, PROMPTLY,
                             "the reload")
            assert daemon.intake is not None
            daemon.intake.request_resync()  # what a lost uevent (ENOBUFS) sets off
            await wait_until(lambda: any(text.startswith("Resynchronised from sysfs")
                                         for text in runner.logged.texts()), PROMPTLY,
                             "the resync")
        finally:
            for _, writer in connections:
                writer.close()
            stop = asyncio.ensure_future(runner.__aexit__(None, None, None))
            done, _ = await asyncio.wait({stop}, timeout=PROMPTLY)
            stopped = stop in done
            if not stopped:
                await stop
        assert stopped, "the stop waited behind the clients' questions"
        assert running(pidfile) == [], "an explain worker outlived the daemon's stop"

    asyncio.run(scenario())


def test_a_question_past_its_deadline_is_answered_with_a_timeout_and_its_worker_killed(
        root: Root, pidfile: Path) -> None:
    async def scenario() -> None:
        async with RunningDaemon(root, source=FakeUeventSource()) as daemon:
            hang_explanations(daemon, pidfile, ExplainLimits(deadline=0.5))
            reader, writer = await _ask(daemon.root.path("/run/kmodd/io.kmodd"),
                                        "io.kmodd.Explain", {"module": "kmodd_serial"})
            try:
                assert await _reply(reader, PROMPTLY) == {
                    "error": "io.kmodd.TimedOut",
                    "parameters": {"reason": "explaining kmodd_serial took more than 0.5 s; "
                                             "gave up"}}
                assert len(pidfile.read_text().split()) == 1
                assert running(pidfile) == []
            finally:
                writer.close()

    asyncio.run(scenario())


def _default_executor_uses(path: Path) -> list[str]:
    """Calls in `path` that run work in asyncio's default executor."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        first = node.args[0] if node.args else None
        default = isinstance(first, ast.Constant) and first.value is None
        if name == "to_thread" or (name == "run_in_executor" and default):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    return found


def test_no_daemon_code_runs_work_in_asyncios_shared_default_executor() -> None:
    uses = [use for path in sorted((REPO / "kmodd").rglob("*.py"))
            for use in _default_executor_uses(path)]
    assert uses == []
