"""Client explanations run in worker processes: bounded in number, time and output."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from kmodd.core.explain.model import Verdict
from kmodd.system.explainer import (
    ExplainBusy,
    Explainer,
    ExplainFailed,
    ExplainLimits,
    ExplainTimeout,
)

#: A stand-in worker that starts a grandchild in its group, writes its pid, then hangs.
HANGING = """
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "600"])
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    return status != "Z"


def test_a_worker_explains_a_module_of_the_root(tmp_path: Path) -> None:
    moddir = tmp_path / "lib/modules/6.1.0"
    moddir.mkdir(parents=True)
    for name in ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin"):
        (moddir / name).write_text("")

    async def run() -> Verdict:
        explainer = Explainer(str(tmp_path))
        expl = await explainer.explain("nosuchmodule", moddir="/lib/modules/6.1.0",
                                       failure=None, read_log=False)
        return expl.verdict

    assert asyncio.run(run()) is Verdict.PROBLEM


def test_calls_beyond_the_workers_and_waiting_places_are_told_busy(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"

    async def run() -> list[str]:
        explainer = Explainer(str(tmp_path), ExplainLimits(workers=1, waiting=1, deadline=30),
                              argv=(sys.executable, "-c", HANGING, str(pidfile)))
        calls = [asyncio.ensure_future(explainer.explain(str(i), moddir="/m", failure=None,
                                                         read_log=False)) for i in range(4)]
        await asyncio.sleep(0.5)
        done = [type(c.exception()).__name__ for c in calls if c.done()]
        assert explainer.close() == 1
        await asyncio.gather(*calls, return_exceptions=True)
        return done

    assert asyncio.run(run()) == ["ExplainBusy", "ExplainBusy"]


def test_a_worker_past_its_deadline_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"

    async def run() -> BaseException | None:
        explainer = Explainer(str(tmp_path), ExplainLimits(deadline=2.0),
                              argv=(sys.executable, "-c", HANGING, str(pidfile)))
        try:
            await explainer.explain("e1000", moddir="/m", failure=None, read_log=False)
        except ExplainTimeout as e:
            return e
        return None

    assert isinstance(asyncio.run(run()), ExplainTimeout)
    worker, grandchild = map(int, pidfile.read_text().split())
    deadline = time.monotonic() + 5
    while (alive(worker) or alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker) and not alive(grandchild)


@pytest.mark.parametrize(("script", "reason"), [
    ("import sys; sys.stderr.write('explain worker: bad request: x\\n'); sys.exit(2)",
     "explain worker: bad request: x"),
    ("print('[1, 2')", "the worker's answer is not an explanation"),
    ("import sys; sys.stdout.write('x' * 5000)", "the worker wrote more than 4096 bytes"),
])
def test_a_failing_or_babbling_worker_gives_explain_failed(tmp_path: Path, script: str,
                                                           reason: str) -> None:
    async def run() -> str:
        explainer = Explainer(str(tmp_path), ExplainLimits(max_output=4096),
                              argv=(sys.executable, "-c", script))
        with pytest.raises(ExplainFailed) as caught:
            await explainer.explain("x", moddir="/m", failure=None, read_log=False)
        return str(caught.value)

    assert asyncio.run(run()).startswith(reason)


def test_a_closed_explainer_refuses_new_calls(tmp_path: Path) -> None:
    async def run() -> None:
        explainer = Explainer(str(tmp_path))
        explainer.close()
        with pytest.raises(ExplainBusy):
            await explainer.explain("x", moddir="/m", failure=None, read_log=False)

    asyncio.run(run())
