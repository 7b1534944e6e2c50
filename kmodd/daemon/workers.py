"""Bounded pools of worker threads, one per kind of work, so that no kind can starve another.

The daemon runs blocking work in threads of its own pools, never in asyncio's default
executor (which every kind of work would share):

* inserts and install commands: the loader's pools (`daemon.loader`);
* its own work, reloads, resyncs and sysfs scans: `SYSTEM_WORKERS` threads;
* clients' questions (`Explain`): `CLIENT_WORKERS` threads and at most `CLIENT_QUEUE` jobs
  waiting. A client that finds the queue full is told the daemon is busy at once; a job
  that is not done by its deadline is answered with a timeout.

A thread that blocks (a read that never ends) keeps its worker, but nothing else waits for
it: the caller's await ends at the deadline, the pool's queue bound holds the memory, and
the threads are daemon threads, so a stopping daemon exits without joining them.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Threads for the daemon's own work: a reload's snapshot build and a resync's sysfs walk
#: may run together (a reload never waits behind a resync, nor the reverse).
SYSTEM_WORKERS = 2
#: Threads for clients' questions: Explain reads module files; a few at a time are plenty.
CLIENT_WORKERS = 2
#: Client jobs waiting for a thread; one more is refused as busy.
CLIENT_QUEUE = 8
#: Seconds an Explain may take before its client is answered with a timeout.
EXPLAIN_DEADLINE = 30.0
#: Seconds a snapshot build (reload, decode) may take before the reload is given up: a
#: decode of the largest trees takes a few seconds, a read that hangs would take for ever.
BUILD_DEADLINE = 120.0


class PoolBusy(Exception):
    """The pool's queue is full: the job was not taken."""


class PoolTimeout(Exception):
    """The job was not done by its deadline (its thread may still be running)."""


class PoolClosed(Exception):
    """The pool was shut down: the job was not taken."""


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    refused: int  # jobs refused because the queue was full
    timed_out: int  # jobs whose caller stopped waiting at the deadline
    waiting: int
    threads: int


class WorkerPool:
    """`workers` daemon threads, started on demand, and a queue of at most `queue_max` jobs
    waiting (None: no bound, for callers that bound themselves)."""

    def __init__(self, name: str, workers: int, queue_max: int | None = None) -> None:
        self.name = name
        self.workers = workers
        self.queue_max = queue_max
        self._jobs: collections.deque[tuple[Future[object], Callable[[], object]]] = (
            collections.deque())
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job
        self._closed = False
        self._refused = 0  # jobs refused because the queue was full
        self._timed_out = 0  # jobs whose caller stopped waiting at the deadline

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        with self._cond:
            return len(self._jobs)

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(self._refused, self._timed_out, self.waiting, len(self._threads))

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue `fn`; raises PoolBusy when the queue is full, PoolClosed after shutdown."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise PoolClosed(self.name)
            if self.queue_max is not None and len(self._jobs) >= self.queue_max:
                self._refused += 1
                raise PoolBusy(self.name)
            self._jobs.append((future, fn))  # type: ignore[arg-type]
            if self._idle == 0 and len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self.name}-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            else:
                self._cond.notify()
        return future

    async def run(self, fn: Callable[[], T], deadline: float | None = None) -> T:
        """`fn()` in a thread of the pool; its result or exception.

        Raises PoolBusy at once when the queue is full, PoolTimeout after `deadline`
        seconds. When the caller is cancelled or times out, a job not yet started is
        dropped; a running one runs on, but nobody waits for it.
        """
        future = self.submit(fn)
        waited = asyncio.wrap_future(future)
        waited.add_done_callback(_retrieved)  # a late failure nobody awaits is not an error
        try:
            return await asyncio.wait_for(asyncio.shield(waited), deadline)
        except TimeoutError:
            future.cancel()
            self._timed_out += 1
            raise PoolTimeout(self.name) from None
        except asyncio.CancelledError:
            future.cancel()
            raise

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._jobs:  # closed and nothing left
                    return
                future, fn = self._jobs.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up before it started
            try:
                result = fn()
            except BaseException as e:
                future.set_exception(e)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Drop the queued jobs and let idle threads end; never waits for a running job."""
        with self._cond:
            self._closed = True
            dropped = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for future, _ in dropped:
            future.cancel()
