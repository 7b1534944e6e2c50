"""Every start is a recovery: re-probe devices left without a driver (the rules:
`core.autoload.reprobe`).

`Devices` hands over each device that already existed (scanned at coldplug or resync, or
replayed by a synthetic uevent) once its handling is finished;
what the device's modalias resolved to that is live, the sysfs facts of its binding (read in
a thread) and the rules decide whether it gets a re-probe. A re-probe writes the device's name
to its bus's `drivers_probe` in a thread of this room's own pool (REPROBE_PARALLEL at once:
a probe can block for as long as the driver probes), waits at most REPROBE_TIMEOUT for it,
then reads the binding back. At most REPROBE_MAX devices are re-probed per instance.

Each re-probe is its own outcome on the device's record (`kmodctl devices`, `why`, `explain`),
in the journal (bound: notice; still unbound, timed out or refused: warning, with what the
kernel said about the device meanwhile) and in the record file (`system.loadrecords`). The
kernel's `bind` and `unbind` uevents are followed too: a device that loses its driver while
kmodd watches is never re-probed (rule 4), by this instance or the next ones of the boot.
"""

from __future__ import annotations

import asyncio
import errno as E
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from kmodd.core.autoload.kmsg import is_about_module, texts
from kmodd.core.autoload.messages import Message
from kmodd.core.autoload.reprobe import BindingFacts, ReprobeResult, should_reprobe
from kmodd.core.kmod.libkmodlog import strerror
from kmodd.daemon.report import Reporter
from kmodd.daemon.workers import PoolTimeout, WorkerPool
from kmodd.system.journal import Priority
from kmodd.system.kmsg import KmsgSource
from kmodd.system.loadrecords import LoadRecords

#: Devices re-probed per instance at most.
REPROBE_MAX = 64
#: Re-probes running at once (each holds a thread while the driver probes).
REPROBE_PARALLEL = 4
#: Seconds a re-probe is waited for.
REPROBE_TIMEOUT = 30.0
#: Kernel lines quoted per re-probe at most.
REPROBE_KERNEL_LINES = 8


class Binding(Protocol):
    """The sysfs edge (`system.binding.SysfsBinding`; tests give a simulated kernel's)."""

    def driver(self, devpath: str) -> str | None: ...

    def facts(self, devpath: str, modules: Iterable[str]) -> BindingFacts: ...

    def probe(self, bus: str, devpath: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Reprobe:
    """One device's re-probe: what came of it, why it was done, and when."""

    result: ReprobeResult
    reason: str
    driver: str | None = None
    errno: int = 0
    kernel_lines: tuple[str, ...] = ()
    started: float = 0.0  # time.monotonic()
    finished: float = 0.0

    @property
    def words(self) -> str:
        """`reprobed: bound (ahci)`, `reprobed: still unbound`..."""
        match self.result:
            case ReprobeResult.BOUND:
                return f"reprobed: bound ({self.driver})"
            case ReprobeResult.STILL_UNBOUND:
                return "reprobed: still unbound"
            case ReprobeResult.TIMED_OUT:
                return f"reprobed: no answer within {REPROBE_TIMEOUT:g} s"
            case _:
                return f"reprobe refused: {strerror(self.errno)}"


@dataclass(frozen=True, slots=True)
class Scanned:
    """A scanned device whose handling is finished: what recovery needs of its record."""

    devpath: str
    live_candidates: tuple[str, ...]  # the modules its modalias resolved to that are live
    attach: Callable[[Reprobe], None]  # puts the outcome on the device's record


class Recovery:
    """Re-probes; `consider()` from the event loop, `run()` as one of the daemon's tasks."""

    def __init__(self, binding: Binding, kmsg: KmsgSource, reporter: Reporter,
                 records: LoadRecords | None, *, live_before_start: frozenset[str],
                 unbound: Iterable[str], limit: int = REPROBE_MAX,
                 parallel: int = REPROBE_PARALLEL, timeout: float = REPROBE_TIMEOUT) -> None:
        self.binding = binding
        self.kmsg = kmsg
        self.reporter = reporter
        self.records = records
        self.live_before_start = live_before_start
        self.unbound_while_watched: set[str] = set(unbound)
        self.limit = limit
        self.timeout = timeout
        self.pool = WorkerPool("kmodd-reprobe", parallel)
        self._queue: asyncio.Queue[Scanned] = asyncio.Queue()
        self._considered: set[str] = set()  # devpaths given a chance this instance
        self.reprobed = 0
        self.results: dict[str, Reprobe] = {}

    # -- what the event loop tells ----------------------------------------------------------

    def consider(self, device: Scanned) -> None:
        """A scanned device's handling finished (rule 1: only scanned ones come here)."""
        if not device.live_candidates or device.devpath in self._considered:
            return
        if not self.live_before_start.intersection(device.live_candidates):
            return  # rule 3, without touching sysfs
        self._considered.add(device.devpath)
        self._queue.put_nowait(device)

    def driver_event(self, devpath: str, driver: str | None) -> None:
        """The kernel's `bind` (driver) or `unbind` (None) uevent for a device."""
        if driver is None:
            if devpath not in self.unbound_while_watched:
                self.unbound_while_watched.add(devpath)
                if self.records is not None:
                    self.records.unbound(devpath)
        elif devpath in self.unbound_while_watched:
            self.unbound_while_watched.discard(devpath)
            if self.records is not None:
                self.records.bound(devpath, driver)

    # -- the work ---------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            while True:
                device = await self._queue.get()
                tasks.create_task(self._one(device))

    def close(self) -> None:
        self.pool.shutdown()

    async def _one(self, device: Scanned) -> None:
        devpath = device.devpath
        try:
            facts = await self.pool.run(
                lambda: self.binding.facts(devpath, device.live_candidates), self.timeout)
        except PoolTimeout:
            return  # sysfs did not answer: nothing is known, nothing is done
        verdict = should_reprobe(facts, device.live_candidates, self.live_before_start,
                                 unbound_while_watched=devpath in self.unbound_while_watched,
                                 reprobed=devpath in self.results)
        if not verdict.probe or facts.bus is None:
            return
        if self.reprobed >= self.limit:
            self.reporter.log(Priority.WARNING, Message.REPROBE_FAILED,
                              f"Not re-probing {devpath}: {self.limit} devices were "
                              "re-probed already by this instance", "reprobe")
            return
        self.reprobed += 1
        bus = facts.bus
        started = time.monotonic()
        name = os.path.basename(devpath)
        drivers = verdict.modules

        def probe() -> tuple[int, str | None, tuple[str, ...]]:
            with self.kmsg.watch() as watch:
                err = self.binding.probe(bus, devpath)
                driver = self.binding.driver(devpath)
                lines = texts(tuple(
                    r for r in watch.records()
                    if name in r.text or any(is_about_module(r, m) for m in drivers)))
            return err, driver, lines[:REPROBE_KERNEL_LINES]

        try:
            err, driver, lines = await self.pool.run(probe, self.timeout)
        except PoolTimeout:
            outcome = Reprobe(ReprobeResult.TIMED_OUT, verdict.reason, None, E.ETIMEDOUT,
                              (), started, time.monotonic())
        else:
            if err:
                result = ReprobeResult.FAILED
            elif driver is not None:
                result = ReprobeResult.BOUND
            else:
                result = ReprobeResult.STILL_UNBOUND
            outcome = Reprobe(result, verdict.reason, driver, err, lines, started,
                              time.monotonic())
        self.results[devpath] = outcome
        device.attach(outcome)
        if self.records is not None:
            self.records.reprobed(devpath, outcome.result.value)
        self._tell(devpath, outcome)

    def _tell(self, devpath: str, outcome: Reprobe) -> None:
        text = f"Re-probed {devpath}: {outcome.reason}; "
        if outcome.result is ReprobeResult.BOUND:
            priority, message = Priority.NOTICE, Message.REPROBED
            text += f"driver {outcome.driver} took it"
        elif outcome.result is ReprobeResult.STILL_UNBOUND:
            priority, message = Priority.WARNING, Message.REPROBE_FAILED
            text += "no driver took it"
        elif outcome.result is ReprobeResult.TIMED_OUT:
            priority, message = Priority.WARNING, Message.REPROBE_FAILED
            text += f"the probe had not returned after {self.timeout:g} s"
        else:
            priority, message = Priority.WARNING, Message.REPROBE_FAILED
            text += f"the kernel refused the probe: {strerror(outcome.errno)}"
        if outcome.kernel_lines:
            text += "; kernel: " + " | ".join(outcome.kernel_lines)
        self.reporter.log(priority, message, text, "reprobe", DEVPATH=devpath,
                          KMODD_REPROBE=outcome.result.value)
