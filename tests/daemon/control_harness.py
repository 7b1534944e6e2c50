"""A fake daemon state for io.kmodd, and a Varlink server running it in a background thread.

The fake returns fixed, realistic views and records every changing call, so tests can check
both what a client sees and that a refused call never reached the daemon.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence

from kmodd.core.explain.model import Check, Explanation, Finding, Verdict
from kmodd.daemon.control.interface import ReloadFailed, build_service
from kmodd.daemon.control.views import (
    CandidateView,
    DeviceView,
    ExplanationView,
    LoadResultView,
    ModuleState,
    ModuleView,
    PlanStepView,
    StatisticsView,
    StatusView,
    WhyView,
)
from kmodd.daemon.events import EventHub, EventView
from kmodd.daemon.lifecycle import DaemonState
from kmodd.daemon.varlink import Limits, VarlinkService
from kmodd.system.notify import bind_listener

VIRTIO_NET = "/devices/pci0000:00/0000:00:03.0/virtio2"
MODDIR = "/lib/modules/6.1.0-test"


def explanation_of(module: str) -> Explanation:
    """The fake daemon's explanation: virtio_net's plan; anything else is not found."""
    if module == "virtio_net":
        return Explanation(module, "6.1.0-test", MODDIR, (module,), (
            Finding(Check.PLAN, Verdict.INFO, "modprobe would insert net_failover, virtio_net",
                    module),))
    return Explanation(module, "6.1.0-test", MODDIR, (), (
        Finding(Check.NOT_FOUND, Verdict.PROBLEM, "no module or alias of this name"),))


def seen_of(module: str) -> tuple[str, ...]:
    if module == "virtio_net":
        return (f"kmodd's last outcome for virtio_net: inserted for {VIRTIO_NET}",)
    return (f"kmodd has not acted on {module} since it started",)
PCSPKR = "/devices/platform/pcspkr"
SERIAL = "/devices/platform/serial8250"

DEVICES = (
    DeviceView(VIRTIO_NET, "virtio", "virtio:d00000001v00001AF4", 0, ("virtio_net",),
               (PlanStepView("insert", "net_failover"), PlanStepView("insert", "virtio_net")),
               "inserted", 1000, 1200, 9200, "virtio_net", "0x1af4", "0x0001"),
    DeviceView(PCSPKR, "platform", "platform:pcspkr", 0, ("pcspkr",),
               (PlanStepView("skip", "pcspkr", "blacklisted in /etc/modprobe.d/b.conf:1"),),
               "blacklisted", 1000, 1100, 1150),
    DeviceView(SERIAL, "platform", "platform:serial8250", 812, (), (), None, 5000),
)
MODULES = (
    ModuleView("virtio_net", ModuleState.LIVE, "inserted", None, (VIRTIO_NET,), 1200, 9200, "kmodd",
               queued_usec=1200, after="net_failover", device=VIRTIO_NET),
    ModuleView("net_failover", ModuleState.LIVE, "inserted", None, (VIRTIO_NET,), 1200, 3400,
               "previous-instance", 377, queued_usec=1200, device=VIRTIO_NET),
    ModuleView("pcspkr", ModuleState.NOT_LOADED, "blacklisted", None, (PCSPKR,), 1100, 1150),
)


class FakeState:
    def __init__(self) -> None:
        self.loads: list[tuple[tuple[str, ...], bool]] = []
        self.unloads: list[tuple[str, ...]] = []
        self.generation = 1
        self.fail_reload = False

    def status(self) -> StatusView:
        return StatusView("0.1.0", DaemonState.RUNNING, os.getpid(), "6.1.0-test", 5_000_000,
                          180_000, True, self.generation, False)

    def statistics(self) -> StatisticsView:
        return StatisticsView(120, 117, {"sender-not-kernel": 3}, {}, 0, 0, len(DEVICES),
                              {"inserted": 2, "blacklisted": 1}, 0, 1)

    def devices(self, devpath: str | None) -> Sequence[DeviceView]:
        return [d for d in DEVICES if devpath is None or d.devpath == devpath]

    def modules(self, name: str | None) -> Sequence[ModuleView]:
        return [m for m in MODULES if name is None or m.name == name]

    def why(self, target: str) -> WhyView | None:
        for d in DEVICES:
            if target in (d.devpath, d.modalias) and d.devpath == PCSPKR:
                return WhyView(target, d.devpath, d.modalias, (
                    CandidateView("pcspkr", "modules.alias", "skipped",
                                  "blacklisted in /etc/modprobe.d/b.conf:1"),
                ), "pcspkr is not loaded: it is blacklisted")
        return None

    async def explain(self, module: str, *, kernel_log: bool) -> ExplanationView:
        return ExplanationView(explanation_of(module), seen_of(module))

    def dmesg_restricted(self) -> bool:
        return True

    async def load(self, modules: Sequence[str], dry_run: bool) -> Sequence[LoadResultView]:
        self.loads.append((tuple(modules), dry_run))
        return [
            LoadResultView(m, "inserted", None, f"Inserted module '{m}'",
                           (PlanStepView("insert", m),))
            if m != "nosuch" else
            LoadResultView(m, "not-found", 2, f"Module {m} not found")
            for m in modules
        ]

    async def unload(self, modules: Sequence[str]) -> Sequence[LoadResultView]:
        self.unloads.append(tuple(modules))
        return [LoadResultView(m, "removed", None, f"Removed module '{m}'") for m in modules]

    async def reload(self) -> int:
        if self.fail_reload:
            raise ReloadFailed("modules.dep.bin: bad magic")
        self.generation += 1
        return self.generation


class RunningServer:
    """A VarlinkService serving on a socket from its own event-loop thread."""

    def __init__(self, service: VarlinkService, path: str) -> None:
        self.service = service
        self.path = path
        self.loop = asyncio.new_event_loop()
        listener = bind_listener(path)
        self._ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(self._ready.set)
            self.loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        self._ready.wait()

        async def start() -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(service.serve(listener))

        self._task = asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)

    def call_in_loop(self, fn: object, *args: object) -> None:
        self.loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def shutdown() -> None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def start_control(path: str, *, admin_group: str = "", limits: Limits | None = None
                  ) -> tuple[RunningServer, FakeState, EventHub]:
    state = FakeState()
    hub = EventHub()
    service = build_service(state, hub, version="0.1.0", admin_group=admin_group,
                            limits=limits, check_replies=True)
    return RunningServer(service, path), state, hub


def event(n: int) -> EventView:
    return EventView("inserted", 1000 + n, f"Inserted module 'm{n}'", VIRTIO_NET, None, f"m{n}",
                     "inserted")
