"""Handling devices: for each queued event decide (udev's `kmod load`), load, record, tell.

For an `add` with a MODALIAS the modalias is looked up and decided like udev's builtin does
(`core.autoload.decide.decide`: every module found, the blacklist applied as `modprobe -b`,
built-in and live modules skipped); the modules udev's static rules load for the event
(`core.autoload.udev_static`) are decided the same way, and loaded in the background (at a lower CPU
priority than the device's own driver, `daemon.loader`). Deciding is quick and runs on the event
loop, one event after another, against the snapshot that is current at that moment. The
chains to run are handed to the `Loader` and awaited in a task per device, so the next
event is decided while modules load.

What is remembered goes to `daemon.records` (a device leaves its table when the kernel
removes it); what is told goes through `daemon.telling`, each step as it ends.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from kmodd.core.autoload.decide import (
    AUTOLOAD_FLAGS,
    Candidate,
    Resolution,
    decide,
    redecide,
)
from kmodd.core.autoload.messages import Message
from kmodd.core.autoload.outcome import Outcome, Request
from kmodd.core.autoload.udev_static import static_loads
from kmodd.core.autoload.uevent import Action
from kmodd.core.kmod.binindex import IndexFileError
from kmodd.core.kmod.plan import LiveState
from kmodd.core.kmod.resolve import Resolver
from kmodd.daemon.intake import Intake, Origin, Queued
from kmodd.daemon.loader import ChainResult, Loader
from kmodd.daemon.records import ChainRecord, DeviceRecord, Records, device_outcome
from kmodd.daemon.recovery import Reprobe, Scanned
from kmodd.daemon.report import Reporter
from kmodd.daemon.snapshot import Snapshot, Snapshots
from kmodd.daemon.telling import Teller
from kmodd.system.journal import Priority

#: Keys (modaliases) whose decisions and plans are remembered per snapshot.
DECISION_MEMO_MAX = 4096
#: Module objects one resolver may hold before the daemon starts a fresh one (each new
#: modalias adds its own alias objects; the index has a few thousand modules).
RESOLVER_POOL_MAX = 16384
#: The variable the kernel adds to a uevent written to a device's `uevent` file (a synthetic
#: one, as `udevadm trigger` makes): "SYNTH_UUID=0" without a UUID.
SYNTHETIC_KEY = "SYNTH_UUID"
#: Seconds after an insert of a module ended within which its `add` uevent is still this
#: instance's own (the uevent is sent during the insert; the event loop may see it later).
OURS_WITHIN = 30.0
@dataclass(frozen=True, slots=True)
class DeviceStatistics:
    handled_events: int
    decision_hits: int  # devices decided from the memo of an earlier one with their modalias
    devices: int  # in the table now
    modules: int


class Decisions:
    """Decide keys against a snapshot, as udev's long-lived libkmod context does.

    One resolver serves every event on a snapshot, so a module's objects, its parsed
    modules.dep line and its softdeps are made once, not once per event (libkmod's context
    keeps its module objects the same way). Devices also share modaliases (CPUs, identical
    functions), and a plan depends only on the snapshot (index, configuration, which files
    exist), so the second device with a modalias costs one state check per module
    (`core.autoload.decide.redecide`). Both memos start over with a new snapshot, or when full.
    """

    def __init__(self, live: LiveState) -> None:
        self.live = live
        self._memo: dict[str, Resolution] = {}
        self._snapshot: Snapshot | None = None
        self._resolver: Resolver | None = None
        self.hits = 0

    def _current(self, snapshot: Snapshot) -> Resolver:
        resolver = self._resolver
        if (snapshot is not self._snapshot or resolver is None
                or len(resolver.pool) >= RESOLVER_POOL_MAX):
            self._memo.clear()
            self._snapshot = snapshot
            resolver = self._resolver = snapshot.resolver()
        return resolver

    def resolve(self, snapshot: Snapshot, keys: Sequence[str]) -> tuple[Resolution, ...]:
        resolver = self._current(snapshot)
        memo = self._memo
        if len(keys) == 1:
            hit = memo.get(keys[0])
            if hit is not None:
                again = redecide(resolver, self.live, hit)
                if again is not None:
                    self.hits += 1
                    return (again,)
        resolutions = tuple(decide(resolver, self.live, key, AUTOLOAD_FLAGS) for key in keys)
        if len(keys) == 1:
            if len(memo) >= DECISION_MEMO_MAX:
                memo.clear()
            memo[keys[0]] = resolutions[0]
        return resolutions


class Devices:
    """The dispatch: each queued device decided, its chains scheduled, its record kept."""

    def __init__(self, snapshots: Snapshots, loader: Loader, live: LiveState,
                 reporter: Reporter, records: Records, *, is_loaded: Callable[[str], bool],
                 static_rules: bool, dry_run: bool) -> None:
        """`live` answers the decisions (a listing may be a little stale: the loader asks
        the kernel again before each insert)."""
        self.snapshots = snapshots
        self.loader = loader
        self.live = live
        self.reporter = reporter
        self.is_loaded = is_loaded
        self.static_rules = static_rules
        self.dry_run = dry_run
        self.table = records
        self.teller = Teller(reporter, records)
        self._seen_other: set[str] = set()  # events with nothing to load (modules...)
        self.decisions = Decisions(live)
        self._expected: set[str] = set()
        self._expecting = False
        self._settled = asyncio.Event()
        #: Told when a lookup meets a damaged index (the daemon runs degraded then).
        self.on_index_damage: Callable[[str], None] | None = None
        self._settled.set()
        self._live_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._handled_events = 0
        #: Told of each scanned device whose handling finished (the re-probe's chance).
        self.on_scanned: Callable[[Scanned], None] | None = None
        #: Told of the kernel's bind (devpath, driver) and unbind (devpath, None) uevents.
        self.on_driver_event: Callable[[str, str | None], None] | None = None

    def statistics(self) -> DeviceStatistics:
        return DeviceStatistics(self._handled_events, self.decisions.hits,
                                len(self.table.devices), len(self.table.modules))

    # -- what the intake asks ---------------------------------------------------------------

    def handled(self, devpath: str, modalias: str | None) -> bool:
        """Was this device handled with this modalias already (and is it finished)?"""
        record = self.table.devices.get(devpath)
        if record is None:
            # Only an event without a modalias was seen (a module's, or the `bind` or
            # `change` of a device whose `add` this instance never saw: a predecessor
            # killed after reading it): a device with a modalias is still to be handled.
            return modalias is None and devpath in self._seen_other
        # The kernel ends a cpu's MODALIAS with a newline that the sysfs scan does not keep.
        seen = record.modalias.rstrip("\n") if record.modalias is not None else None
        return seen == modalias and record.finished is not None

    # -- coldplug bookkeeping ------------------------------------------------------------------

    def expect(self, devpath: str) -> None:
        """A scan is about to queue this device; `wait_expected` waits for it."""
        self._expected.add(devpath)
        self._expecting = True
        self._settled.clear()

    def _done(self, devpath: str) -> None:
        if self._expected:
            self._expected.discard(devpath)
            if not self._expected and not self._expecting:
                self._settled.set()

    def expected_fed(self) -> None:
        """The scan has queued everything it will."""
        self._expecting = False
        if not self._expected:
            self._settled.set()

    async def wait_expected(self) -> None:
        await self._settled.wait()

    # -- handling -----------------------------------------------------------------------------

    async def run(self, intake: Intake) -> None:
        """Take devices from the intake forever; decide each, load in a task per device."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                item = await intake.get()
                devpath = item.event.devpath
                try:
                    work = self._decide(item)
                except IndexFileError as e:  # met in a part not yet checked whole
                    self.reporter.log(Priority.ERR, Message.INDEX_DAMAGED,
                                      f"Cannot handle {devpath}: the module index is "
                                      f"damaged: {e}")
                    if self.on_index_damage is not None:
                        self.on_index_damage(str(e))  # degraded until a good reload
                    self._done(devpath)
                    continue
                except Exception as e:  # a bug: one device, not all
                    self.reporter.log(Priority.ERR, Message.INTERNAL_ERROR,
                                      f"Cannot handle {devpath}: {type(e).__name__}: {e}")
                    self._done(devpath)
                    continue
                if work is not None:
                    tasks.create_task(self._guarded(work, devpath))

    async def _guarded(self, work: _Work, devpath: str) -> None:
        try:
            await self._load(work)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must cost one device, not the daemon
            self.reporter.log(Priority.ERR, Message.INTERNAL_ERROR,
                              f"Internal error while loading modules for {devpath}: "
                              f"{type(e).__name__}: {e}")
            record = self.table.devices.get(devpath)
            if record is not None and record.finished is None:
                record.finished = time.monotonic()
                record.outcome = Outcome.FAILED
            self._done(devpath)

    def _decide(self, item: Queued) -> _Work | None:
        """Decide synchronously; return the loading still to do, if any."""
        event = item.event
        devpath = event.devpath
        self._handled_events += 1
        if self.reporter.hub.subscribers:
            self.reporter.event("uevent", f"{event.action.value} {devpath} "
                                f"({item.origin.value})", devpath, event.modalias)
        if event.subsystem == "module":
            if event.action is Action.ADD:
                self._went_live(event.sysname)
                if item.origin is Origin.KERNEL:  # a scan's module events are not news
                    self._attribute(event.sysname)
            elif event.action is Action.REMOVE:
                self.table.went_away(event.sysname)
        elif event.action is Action.BIND and self.on_driver_event is not None:
            self.on_driver_event(devpath, event.env.get("DRIVER", ""))
        elif event.action is Action.UNBIND and self.on_driver_event is not None:
            self.on_driver_event(devpath, None)
        if event.action is Action.REMOVE:
            self.table.devices.pop(devpath, None)
            self._seen_other.discard(devpath)
            self._done(devpath)
            return None
        keys: list[str] = []
        if event.action is Action.ADD and event.modalias:
            keys.append(event.modalias)
        n_static = 0
        if self.static_rules:
            static = static_loads(event, self.is_loaded)
            keys.extend(static)
            n_static = len(static)
        if not keys:
            self._seen_other.add(devpath)
            self._done(devpath)
            return None
        snapshot = self.snapshots.current
        resolutions = self.decisions.resolve(snapshot, keys)
        record = DeviceRecord(devpath, event.subsystem, event.modalias, event.seqnum,
                              item.origin, item.queued, time.monotonic(), snapshot.generation,
                              resolutions,
                              replayed=(item.origin is not Origin.KERNEL
                                        or SYNTHETIC_KEY in event.env))
        self.table.devices[devpath] = record
        for resolution in resolutions:
            self.teller.tell_decisions(record, resolution)
        to_load: dict[str, Candidate] = {}
        for resolution in resolutions:
            for candidate in resolution.to_load:
                to_load.setdefault(candidate.name, candidate)
        if not to_load:
            self._finish(record)
            return None
        # What only the static rules ask for loads in the background (see daemon.loader).
        own = len(keys) - n_static
        background = frozenset(to_load) - {c.name for r in resolutions[:own] for c in r.to_load}
        return _Work(record, tuple(to_load.values()), snapshot.kernel_blacklist, background)

    async def _load(self, work: _Work) -> None:
        """Run the device's chains: its own driver's first, then (once those modules are
        live, or their chains ended) what only udev's static rules ask for, in the
        background: sg, added for every SCSI device, must not slow a disk's sd_mod chain."""
        record = work.record
        own = [c for c in work.candidates if c.name not in work.background]
        extra = [c for c in work.candidates if c.name in work.background]
        results: dict[str, tuple[ChainResult, bool]] = {}
        async with asyncio.TaskGroup() as tasks:
            own_tasks = [tasks.create_task(self._chain(work, c, False)) for c in own]
            if extra:
                tasks.create_task(self._after_own(work, extra, own_tasks, results))
        results.update(zip((c.name for c in own), (t.result() for t in own_tasks),
                           strict=True))
        for candidate in work.candidates:
            result, joined = results[candidate.name]
            chain = ChainRecord(candidate, result, joined)
            record.chains.append(chain)
            self.teller.tell_chain(chain, record.where, Request.AUTOLOAD, steps_told=True)
        self._finish(record)

    async def _after_own(self, work: _Work, extra: Sequence[Candidate],
                         own_tasks: Sequence[asyncio.Task[tuple[ChainResult, bool]]],
                         results: dict[str, tuple[ChainResult, bool]]) -> None:
        """The background chains, started once every own module went live (its
        `add@/module` uevent) or every own chain ended, whichever comes first."""
        ready = asyncio.Event()
        waiting_live = {c.name for c in work.candidates if c.name not in work.background}
        chains_left = len(own_tasks)

        def went_live(name: str) -> None:
            waiting_live.discard(name)
            if not waiting_live:
                ready.set()

        def chain_ended(_: object) -> None:
            nonlocal chains_left
            chains_left -= 1
            if chains_left == 0:
                ready.set()

        for task in own_tasks:
            task.add_done_callback(chain_ended)
        waiters = {name: self._when_live(name) for name in set(waiting_live)}
        for name, waiter in waiters.items():
            waiter.add_done_callback(functools.partial(lambda n, _: went_live(n), name))
        try:
            if own_tasks:
                await ready.wait()
            extra_results = await asyncio.gather(*(self._chain(work, c, True) for c in extra))
        finally:
            for task in own_tasks:
                task.remove_done_callback(chain_ended)
            for name, waiter in waiters.items():
                self._forget_waiter(name, waiter)
        results.update(zip((c.name for c in extra), extra_results, strict=True))

    def _chain(self, work: _Work, candidate: Candidate,
               background: bool) -> Coroutine[Any, Any, tuple[ChainResult, bool]]:
        assert candidate.plan is not None, "a module to load always has a plan"
        where = work.record.where
        return self.loader.run_chain(
            candidate.plan, AUTOLOAD_FLAGS,
            kernel_blacklist=work.kernel_blacklist, dry_run=self.dry_run,
            background=background, devpath=where.devpath,
            on_step=lambda step: self.teller.tell_step(step, where, Request.AUTOLOAD))

    def _when_live(self, module: str) -> asyncio.Future[None]:
        """A future that the module's `add@/module/<name>` uevent (sent once it is live)
        resolves."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._live_waiters.setdefault(module, []).append(waiter)
        return waiter

    def _went_live(self, module: str) -> None:
        for waiter in self._live_waiters.pop(module, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _forget_waiter(self, module: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._live_waiters.get(module)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._live_waiters[module]

    def _finish(self, record: DeviceRecord) -> None:
        record.finished = time.monotonic()
        record.outcome = device_outcome(record.outcomes())
        self._done(record.devpath)
        if self.on_scanned is not None and record.replayed:
            self._offer_reprobe(record)

    def _offer_reprobe(self, record: DeviceRecord) -> None:
        """Hand a scanned device to the recovery with the modules of its modalias that are
        live now (rule 3 of core.autoload.reprobe is checked there)."""
        if not record.modalias or not record.resolutions:
            return
        own = record.resolutions[0]  # the modalias is always the first key
        names = {c.name for c in own.candidates}
        # Live when decided, or found in the kernel by the insert (EEXIST): a module that an
        # instance killed in its insert left still initialising when this one started.
        live = tuple(dict.fromkeys(
            [c.name for c in own.candidates if c.outcome is Outcome.ALREADY_LOADED]
            + [c.candidate.name for c in record.chains
               if c.candidate.name in names and c.outcome is Outcome.ALREADY_LOADED]))
        if not live or self.on_scanned is None:
            return

        def attach(outcome: Reprobe) -> None:
            if self.table.devices.get(record.devpath) is record:
                record.reprobe = outcome

        self.on_scanned(Scanned(record.devpath, live, attach))

    def _attribute(self, name: str) -> None:
        """A module's `add` uevent: note who made it live, when it was not this instance."""
        if self.loader.inserts.ours(name, OURS_WITHIN) or not self.table.went_live_elsewhere(name):
            return
        self.reporter.log(Priority.INFO, Message.LOADED_ELSEWHERE,
                          f"Module {name} went live, loaded not by kmodd but by the kernel's "
                          "own request or another program", KMODD_MODULE=name)

@dataclass(frozen=True, slots=True)
class _Work:
    record: DeviceRecord
    candidates: tuple[Candidate, ...]
    kernel_blacklist: frozenset[str]
    background: frozenset[str]  # modules only udev's static rules asked for

