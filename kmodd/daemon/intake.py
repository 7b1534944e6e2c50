"""From the uevent socket and sysfs to one bounded queue of devices to handle.

Three producers feed the same queue:

* the uevent socket: uevents the kernel broadcast (already sender-checked and parsed by
  `system.netlink`), handed over from the event loop's reader callback as they arrive;
* coldplug, once after READY=1: every device sysfs shows with a modalias (`system.sysfs`),
  as the `add` event the kernel would send, plus an `add` for every module already in
  `/sys/module` (udev's static rules act on those);
* resync: the same scan again, whenever events may have been lost, that is when the socket
  reports ENOBUFS (`EventsLost`) or the queue was full when a uevent arrived.

The queue holds devices, not events: an event for a device that is still waiting replaces
the waiting one (the latest state of a device is what counts), so a storm of events for a
few devices cannot fill it. A waiting `add` gives way only to another `add` or a `remove`:
the `bind` that follows an `add` as soon as a loaded driver takes the device (or a `change`)
must not cancel the loading the `add` asks for.

The queue holds at most `depth` devices (the `intake_queue` setting). A kernel uevent that
finds it full is dropped and a resync is scheduled; scans wait for room instead of
dropping. A scanned device that was already handled with the same modalias is skipped, so
a resync costs only the scan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.daemon.throttle import LogThrottle, held_note
from kmodd.daemon.workers import SYSTEM_WORKERS, WorkerPool
from kmodd.system.netlink import EventsLost, NetlinkUeventSocket, Rejected, UeventSource
from kmodd.system.root import Root
from kmodd.system.sysfs import DeviceWalk, SysfsDevice, loaded_modules

#: Devices handed from the sysfs walk to the event loop at a time.
SCAN_BATCH = 16
#: Seconds between two log lines about rejected uevents of the same drop reason.
REJECTED_LOG_INTERVAL = 10.0


class Origin(StrEnum):
    """Where a queued event came from."""

    KERNEL = "kernel"
    COLDPLUG = "coldplug"
    RESYNC = "resync"


@dataclass(frozen=True, slots=True)
class Queued:
    """A device waiting to be handled: its latest event, where it came from, and when."""

    event: Uevent
    origin: Origin
    queued: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    queued: int
    coalesced: int  # events that replaced a waiting event of the same device
    overflows: int  # kernel events dropped because the queue was full
    events_lost: int  # ENOBUFS reports from the socket
    resyncs: int
    scanned: int  # devices fed by coldplug and resyncs
    skipped: int  # scanned devices already handled with the same modalias
    depth: int  # devices waiting now


def module_event(name: str) -> Uevent:
    """The `add` uevent of a loaded module (`/module/<name>`, subsystem `module`)."""
    devpath = f"/module/{name}"
    env = {"ACTION": "add", "DEVPATH": devpath, "SUBSYSTEM": "module", "SEQNUM": "0"}
    return Uevent(Action.ADD, devpath, "module", 0, env)


def _replaces(event: Uevent, origin: Origin, waiting: Queued) -> bool:
    """Whether `event` takes the place of the same device's waiting event (see above)."""
    if origin is not Origin.KERNEL and waiting.origin is Origin.KERNEL:
        return False  # a scan's copy never replaces what the kernel said
    return (waiting.event.action is not Action.ADD
            or event.action is Action.ADD or event.action is Action.REMOVE)


class Intake:
    """The bounded device queue and its producers."""

    def __init__(self, source: UeventSource, devices_root: Root, depth: int,
                 handled: Callable[[str, str | None], bool], *,
                 pool: WorkerPool | None = None) -> None:
        """`handled(devpath, modalias)`: was this device handled with this modalias?
        `pool`: the threads that walk sysfs (the daemon's own work, never a client's)."""
        self.pool = pool if pool is not None else WorkerPool("kmodd-scan", SYSTEM_WORKERS)
        self.source = source
        self.devices_root = devices_root
        self.depth = depth
        self._handled = handled
        self._order: asyncio.Queue[str] = asyncio.Queue()
        self._waiting: dict[str, Queued] = {}
        self._room = asyncio.Condition()
        self._room_waiters = 0  # scans waiting in put(): only they need a notify
        self._resync = asyncio.Event()
        self._resync_reason = "events may have been lost"
        self._queued = self._coalesced = self._overflows = self._lost = 0
        self._resyncs = self._scanned = self._skipped = 0
        self.on_resync: Callable[[str, int], None] | None = None  # (reason, devices fed)
        #: Where warnings go (rejected uevents, at most one line per drop reason per
        #: REJECTED_LOG_INTERVAL); None: only counted.
        self.on_warning: Callable[[str], None] | None = None
        self._rejected_log = LogThrottle(REJECTED_LOG_INTERVAL)

    # -- the queue ------------------------------------------------------------------------

    def offer(self, event: Uevent, origin: Origin) -> bool:
        """Queue without waiting; False (and nothing queued) when the queue is full."""
        devpath = event.devpath
        waiting = self._waiting.get(devpath)
        if waiting is not None:
            if _replaces(event, origin, waiting):
                self._waiting[devpath] = Queued(event, origin, waiting.queued)
            self._coalesced += 1
            return True
        if len(self._waiting) >= self.depth:
            return False
        self._waiting[devpath] = Queued(event, origin, time.monotonic())
        self._order.put_nowait(devpath)
        self._queued += 1
        return True

    async def put(self, event: Uevent, origin: Origin) -> None:
        """Queue, waiting for room when the queue is full (scans use this)."""
        while not self.offer(event, origin):
            self._room_waiters += 1
            try:
                async with self._room:
                    await self._room.wait_for(lambda: len(self._waiting) < self.depth)
            finally:
                self._room_waiters -= 1

    async def get(self) -> Queued:
        """The next device to handle."""
        while True:
            devpath = await self._order.get()
            item = self._waiting.pop(devpath, None)
            if item is None:
                continue
            if self._room_waiters and len(self._waiting) < self.depth:
                async with self._room:
                    self._room.notify_all()
            return item

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- producers ------------------------------------------------------------------------

    async def run_receive(self) -> None:
        """Queue what the uevent socket accepted as it arrives; ends only by cancellation or
        with the error that broke the socket."""
        broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def failed(error: BaseException) -> None:
            if not broken.done():
                broken.set_exception(error)

        if isinstance(self.source, NetlinkUeventSocket):
            self.source.on_reject = self._rejected
        self.source.attach(self._take, failed)
        try:
            await broken
        finally:
            self.source.detach()

    def _rejected(self, rejected: Rejected) -> None:
        """Say who sent a datagram the uevent socket refused, rate-limited per reason."""
        if self.on_warning is None:
            return
        held = self._rejected_log.admit(rejected.reason, time.monotonic())
        if held is None:
            return
        who = f"netlink port {rejected.port_id}"
        if rejected.pid is not None:
            who += f" (pid {rejected.pid}, uid {rejected.uid})"
        self.on_warning(f"Rejected a uevent from {who} sent to groups {rejected.groups:#x}: "
                        f"{rejected.reason.value}, ignoring{held_note(held)}")

    def _take(self, batch: Sequence[Uevent | EventsLost]) -> None:
        for item in batch:
            if isinstance(item, EventsLost):
                self._lost += 1
                self.request_resync()
            elif not self.offer(item, Origin.KERNEL):
                self._overflows += 1
                self.request_resync()

    def request_resync(self, reason: str = "events may have been lost") -> None:
        """Rescan sysfs soon; `reason` is what the resync's log line gives."""
        self._resync_reason = reason
        self._resync.set()

    async def run_resync(self) -> None:
        """Rescan sysfs whenever asked (requests during a scan cause one more scan)."""
        while True:
            await self._resync.wait()
            self._resync.clear()
            reason, self._resync_reason = self._resync_reason, "events may have been lost"
            self._resyncs += 1
            fed = await self.scan(Origin.RESYNC)
            if self.on_resync is not None:
                self.on_resync(reason, fed)

    async def scan(self, origin: Origin,
                   on_queue: Callable[[str], None] | None = None) -> int:
        """Feed every device with a modalias (and every loaded module); the number fed.

        `on_queue(devpath)` is called just before each device is queued.
        """
        fed = 0
        async for device in self._walk():
            if self._handled(device.devpath, device.modalias):
                self._skipped += 1
                continue
            if on_queue is not None:
                on_queue(device.devpath)
            await self.put(device.as_uevent(), origin)
            fed += 1
        modules = await self.pool.run(lambda: loaded_modules(self.devices_root))
        for name in modules:
            event = module_event(name)
            if self._handled(event.devpath, None):
                self._skipped += 1
                continue
            if on_queue is not None:
                on_queue(event.devpath)
            await self.put(event, origin)
            fed += 1
        self._scanned += fed
        return fed

    async def _walk(self) -> AsyncIterator[SysfsDevice]:
        """The devices of sysfs as a thread walks it, in batches: the first devices are
        being loaded while the walk goes on (on a slow machine it takes seconds)."""
        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[list[SysfsDevice] | None] = asyncio.Queue()

        def walk() -> None:
            try:
                batch: list[SysfsDevice] = []
                for device in DeviceWalk(self.devices_root, []):
                    batch.append(device)
                    if len(batch) >= SCAN_BATCH:
                        loop.call_soon_threadsafe(batches.put_nowait, batch)
                        batch = []
                loop.call_soon_threadsafe(batches.put_nowait, batch)
            finally:
                loop.call_soon_threadsafe(batches.put_nowait, None)

        walker = asyncio.ensure_future(self.pool.run(walk))
        try:
            while (batch := await batches.get()) is not None:
                for device in batch:
                    yield device
        finally:
            await walker  # its exception, if it failed

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(self._queued, self._coalesced, self._overflows, self._lost,
                              self._resyncs, self._scanned, self._skipped, len(self._waiting))
