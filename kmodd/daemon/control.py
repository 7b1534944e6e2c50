"""kmodd's control interface `io.kmodd`: the IDL, the method table, who may call what.

The daemon's state reaches the handlers through the `ControlState` protocol, whose methods
return the frozen view values below (they mirror the IDL types one to one), so this module
knows nothing of how the daemon keeps its state. `events.EventHub` carries events to
`Monitor` streams.

Authorisation (SO_PEERCRED): methods in `CHANGING_METHODS` need uid 0 or membership (primary
or supplementary group) in the configured admin group; every other method is open to all.
"""

from __future__ import annotations

import dataclasses
import grp
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kmodd.core.explain_idl import VARLINK_TYPES as EXPLAIN_TYPES
from kmodd.core.settings import Settings
from kmodd.daemon.events import EventHub, MonitorOverrun
from kmodd.daemon.varlink import (
    SERVICE_INTERFACE,
    Call,
    Limits,
    Method,
    ProtocolErrors,
    Reply,
    VarlinkError,
    VarlinkService,
)

if TYPE_CHECKING:
    from kmodd.core.explain import Explanation

INTERFACE = "io.kmodd"
DEFAULT_SOCKET = "/run/kmodd/io.kmodd"

IDL = """\
# kmodd: loads kernel modules for devices. This is its control interface.
interface io.kmodd

type DaemonState (starting, running, reloading, stopping)

# What the daemon is doing. Times are microseconds since the daemon started.
type Status (
  version: string,
  state: DaemonState,
  pid: int,
  kernel_release: string,
  uptime_usec: int,
  ready_usec: ?int,
  coldplug_done: bool,
  index_generation: int,
  dry_run: bool
)

# Counters since start; maps are keyed by reason or outcome.
type Statistics (
  uevents_received: int,
  uevents_accepted: int,
  uevents_dropped: [string]int,
  uevents_malformed: [string]int,
  overruns: int,
  resyncs: int,
  devices: int,
  outcomes: [string]int,
  queue_depth: int,
  control_connections: int
)

# One step of a load plan: insert a module, skip it (with the reason), or run an install
# command from modprobe.d.
type PlanStep (
  action: string,
  module: string,
  reason: ?string,
  options: ?string
)

type Device (
  devpath: string,
  subsystem: string,
  modalias: ?string,
  seqnum: int,
  candidates: []string,
  plan: []PlanStep,
  outcome: ?string,
  queued_usec: ?int,
  started_usec: ?int,
  finished_usec: ?int,
  driver: ?string,
  vendor: ?string,
  model: ?string
)

type Module (
  name: string,
  state: string,
  outcome: ?string,
  errno: ?int,
  devices: []string,
  started_usec: ?int,
  finished_usec: ?int
)

# A module considered for a device, and what was decided about it.
type Candidate (
  module: string,
  source: string,
  decision: string,
  reason: string
)

type WhyReport (
  target: string,
  devpath: ?string,
  modalias: ?string,
  candidates: []Candidate,
  summary: string
)

""" + EXPLAIN_TYPES + """
type LoadResult (
  module: string,
  outcome: string,
  errno: ?int,
  message: string,
  plan: []PlanStep
)

# Something the daemon did; streamed by Monitor.
type Event (
  kind: string,
  usec: int,
  message: string,
  devpath: ?string,
  modalias: ?string,
  module: ?string,
  outcome: ?string
)

# The daemon's state and counters.
method GetStatus() -> (status: Status, statistics: Statistics)

# Devices seen (all, or the one at devpath), with candidates, plan, outcome and times.
method ListDevices(devpath: ?string) -> (devices: []Device)

# Modules the daemon acted on (all, or one by name).
method ListModules(name: ?string) -> (modules: []Module)

# For a devpath or a modalias: what was considered, what was decided and why.
method Why(target: string) -> (report: WhyReport)

# Why a module, alias or path does or does not load (the checklist of `kmodctl explain`,
# with the daemon's own record of its last attempt), and what the daemon did with it.
method Explain(module: string) -> (explanation: Explanation, seen: []string)

# Load modules as modprobe would (needs privilege).
method Load(modules: []string, dry_run: ?bool) -> (results: []LoadResult)

# Unload modules (needs privilege).
method Unload(modules: []string) -> (results: []LoadResult)

# Re-read modprobe.d and the module index (needs privilege).
method Reload() -> (generation: int)

# Stream of events as they happen; call with more.
method Monitor() -> (event: Event)

error NoSuchDevice (devpath: string)
error NoSuchModule (module: string)
error ReloadFailed (reason: string)
error MonitorOverrun (lost: int)
error InvalidRequest (reason: string)
error RequestTooLarge (limit: int)
error InternalError (reason: string)
"""

#: Methods that change the system; everything else only reads.
CHANGING_METHODS = frozenset({"Load", "Unload", "Reload"})

PROTOCOL_ERRORS = ProtocolErrors(
    invalid_request=f"{INTERFACE}.InvalidRequest",
    request_too_large=f"{INTERFACE}.RequestTooLarge",
    internal=f"{INTERFACE}.InternalError",
)

# -- views: what ControlState returns, one dataclass per IDL type -------------------------


@dataclass(frozen=True, slots=True)
class StatusView:
    version: str
    state: str
    pid: int
    kernel_release: str
    uptime_usec: int
    ready_usec: int | None
    coldplug_done: bool
    index_generation: int
    dry_run: bool


@dataclass(frozen=True, slots=True)
class StatisticsView:
    uevents_received: int
    uevents_accepted: int
    uevents_dropped: Mapping[str, int]
    uevents_malformed: Mapping[str, int]
    overruns: int
    resyncs: int
    devices: int
    outcomes: Mapping[str, int]
    queue_depth: int
    control_connections: int


@dataclass(frozen=True, slots=True)
class PlanStepView:
    action: str
    module: str
    reason: str | None = None
    options: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceView:
    devpath: str
    subsystem: str
    modalias: str | None
    seqnum: int
    candidates: tuple[str, ...] = ()
    plan: tuple[PlanStepView, ...] = ()
    outcome: str | None = None
    queued_usec: int | None = None
    started_usec: int | None = None
    finished_usec: int | None = None
    driver: str | None = None
    vendor: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ModuleView:
    name: str
    state: str
    outcome: str | None = None
    errno: int | None = None
    devices: tuple[str, ...] = ()
    started_usec: int | None = None
    finished_usec: int | None = None


@dataclass(frozen=True, slots=True)
class CandidateView:
    module: str
    source: str
    decision: str
    reason: str


@dataclass(frozen=True, slots=True)
class WhyView:
    target: str
    devpath: str | None
    modalias: str | None
    candidates: tuple[CandidateView, ...]
    summary: str


@dataclass(frozen=True, slots=True)
class ExplanationView:
    explanation: Explanation  # sent in kmodd.core.explain's wire form
    seen: tuple[str, ...]  # what the daemon did with the module, in sentences


@dataclass(frozen=True, slots=True)
class LoadResultView:
    module: str
    outcome: str
    errno: int | None
    message: str
    plan: tuple[PlanStepView, ...] = ()


def to_wire(value: Any) -> Any:
    """A view (or a sequence or mapping of views) as JSON-ready data; None fields are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_wire(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    return value


class ReloadFailed(Exception):
    """ControlState.reload could not build a new snapshot (the old one stays)."""


class ControlState(Protocol):
    """What the control handlers read and ask of the daemon (phase 2 implements it)."""

    def status(self) -> StatusView: ...

    def statistics(self) -> StatisticsView: ...

    def devices(self, devpath: str | None) -> Sequence[DeviceView]: ...

    def modules(self, name: str | None) -> Sequence[ModuleView]: ...

    def why(self, target: str) -> WhyView | None: ...

    async def explain(self, module: str) -> ExplanationView: ...

    async def load(self, modules: Sequence[str], dry_run: bool) -> Sequence[LoadResultView]: ...

    async def unload(self, modules: Sequence[str]) -> Sequence[LoadResultView]: ...

    async def reload(self) -> int: ...


def limits_from(settings: Settings) -> Limits:
    """The control socket's limits as the daemon's settings give them."""
    return Limits(
        max_request_bytes=settings.control_max_request,
        max_connections=settings.control_max_connections,
        idle_timeout=settings.control_idle_timeout,
        request_timeout=settings.control_request_timeout,
    )


def admin_gid(group: str) -> int | None:
    """The gid of the configured admin group (a name or a number); None if unset or unknown.

    An unknown group leaves changing methods to root alone; the daemon reports it.
    """
    if not group:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def may_change(call: Call, admin: int | None) -> bool:
    """Root, or a member of the admin group, may call changing methods."""
    peer = call.peer
    if peer.uid == 0:
        return True
    return admin is not None and (peer.gid == admin or admin in peer.groups)


def build_service(
    state: ControlState,
    hub: EventHub,
    *,
    version: str,
    url: str = "",
    admin_group: str = "",
    limits: Limits | None = None,
    check_replies: bool = False,
) -> VarlinkService:
    """A VarlinkService implementing io.kmodd on top of `state`."""
    service = VarlinkService(
        vendor="kmodd",
        product="kmodd",
        version=version,
        url=url,
        errors=PROTOCOL_ERRORS,
        limits=limits,
        check_replies=check_replies,
    )
    admin = admin_gid(admin_group)

    def authorize(call: Call) -> VarlinkError | None:
        if may_change(call, admin):
            return None
        return VarlinkError(f"{SERVICE_INTERFACE}.PermissionDenied")

    async def get_status(call: Call) -> Mapping[str, Any]:
        return {"status": to_wire(state.status()), "statistics": to_wire(state.statistics())}

    async def list_devices(call: Call) -> Mapping[str, Any]:
        devpath = call.parameters.get("devpath")
        devices = state.devices(devpath)
        if devpath is not None and not devices:
            raise VarlinkError(f"{INTERFACE}.NoSuchDevice", {"devpath": devpath})
        return {"devices": to_wire(devices)}

    async def list_modules(call: Call) -> Mapping[str, Any]:
        name = call.parameters.get("name")
        modules = state.modules(name)
        if name is not None and not modules:
            raise VarlinkError(f"{INTERFACE}.NoSuchModule", {"module": name})
        return {"modules": to_wire(modules)}

    async def why(call: Call) -> Mapping[str, Any]:
        target = call.parameters["target"]
        report = state.why(target)
        if report is None:
            raise VarlinkError(f"{INTERFACE}.NoSuchDevice", {"devpath": target})
        return {"report": to_wire(report)}

    async def explain(call: Call) -> Mapping[str, Any]:
        from kmodd.core.explain import to_json

        view = await state.explain(call.parameters["module"])
        return {"explanation": to_json(view.explanation), "seen": list(view.seen)}

    async def load(call: Call) -> Mapping[str, Any]:
        modules = call.parameters["modules"]
        dry_run = bool(call.parameters.get("dry_run"))
        return {"results": to_wire(await state.load(modules, dry_run))}

    async def unload(call: Call) -> Mapping[str, Any]:
        return {"results": to_wire(await state.unload(call.parameters["modules"]))}

    async def reload(call: Call) -> Mapping[str, Any]:
        try:
            return {"generation": await state.reload()}
        except ReloadFailed as e:
            raise VarlinkError(f"{INTERFACE}.ReloadFailed", {"reason": str(e)}) from e

    async def monitor(call: Call) -> AsyncIterator[Reply]:
        try:
            async for event in hub.stream():
                yield Reply({"event": to_wire(event)}, continues=True)
        except MonitorOverrun as e:
            raise VarlinkError(f"{INTERFACE}.MonitorOverrun", {"lost": e.lost}) from None

    handlers: dict[str, Method] = {
        "GetStatus": Method(get_status),
        "ListDevices": Method(list_devices),
        "ListModules": Method(list_modules),
        "Why": Method(why),
        "Explain": Method(explain),
        "Load": Method(load),
        "Unload": Method(unload),
        "Reload": Method(reload),
        "Monitor": Method(stream=monitor),
    }
    handlers = {
        name: dataclasses.replace(m, authorize=authorize) if name in CHANGING_METHODS else m
        for name, m in handlers.items()
    }
    service.add_interface(IDL, handlers)
    return service
