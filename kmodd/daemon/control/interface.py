"""kmodd's control interface `io.kmodd`: its text, the method table, who may call what.

The daemon's state reaches the handlers through the `ControlState` protocol, whose methods
return the frozen values of `views` (one per type of `io.kmodd.varlink`), so this module
knows nothing of how the daemon keeps its state. `events.EventHub` carries events to
`Monitor` streams.

Authorisation (SO_PEERCRED) is the table `PRIVILEGES` (docs/privileges.md prints it):
methods in `CHANGING_METHODS` need uid 0 or membership (primary or supplementary group) in
the configured admin group (`control_group`); every other method is open to all, but
`Explain` of a file named by path is not: an unprivileged caller names modules and aliases
and never makes the daemon open a path it chose.
"""

from __future__ import annotations

import dataclasses
import grp
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from kmodd.core.autoload.messages import Message
from kmodd.core.explain.model import to_json
from kmodd.core.kmod.normalize import path_ends_with_kmod_ext
from kmodd.core.settings import Settings
from kmodd.daemon.control.views import (
    DeviceView,
    ExplanationView,
    LoadResultView,
    ModuleView,
    StatisticsView,
    StatusView,
    WhyView,
    to_wire,
)
from kmodd.daemon.events import MONITOR_QUEUE, EventHub, MonitorOverrun
from kmodd.daemon.throttle import LogThrottle, held_note
from kmodd.daemon.varlink import (
    SERVICE_INTERFACE,
    Call,
    Limits,
    Method,
    Peer,
    ProtocolErrors,
    Reply,
    VarlinkError,
    VarlinkService,
)
from kmodd.system.explainer import ExplainLimits
from kmodd.system.journal import Priority

INTERFACE = "io.kmodd"
DEFAULT_SOCKET = "/run/kmodd/io.kmodd"

#: The interface's text: the contract, in one file beside this module.
IDL = (Path(__file__).parent / "io.kmodd.varlink").read_text()

#: Methods that change the system; everything else only reads (PRIVILEGES says who may).
CHANGING_METHODS = frozenset({"Load", "Unload", "Reload"})

PROTOCOL_ERRORS = ProtocolErrors(
    invalid_request=f"{INTERFACE}.InvalidRequest",
    request_too_large=f"{INTERFACE}.RequestTooLarge",
    internal=f"{INTERFACE}.InternalError",
    too_many_connections=f"{INTERFACE}.TooManyConnections",
)

#: Seconds between two log lines about the same refused user or failing method (the next
#: line says how many were held back).
REFUSAL_LOG_INTERVAL = 10.0
INTERNAL_ERROR_LOG_INTERVAL = 10.0

# -- who may call what --------------------------------------------------------------------


class Caller(StrEnum):
    """Who may make a call."""

    ANYONE = "anyone"
    ADMIN = "root or control_group"


@dataclass(frozen=True, slots=True)
class Privilege:
    """One row of the privilege model: who may call a method, what it reads and changes."""

    caller: Caller
    reads: str
    changes: str = "nothing"
    #: Who may name a file by path in the call, when not the same as `caller`.
    by_path: Caller | None = None
    #: Limits beyond the connection and request limits every call has (docs/privileges.md).
    limits: str = "-"


#: The privilege model, one row per method of every interface the daemon serves.
#: `build_service` authorises from it; docs/privileges.md shows `privilege_table()`.
#: The Explain limits the daemon runs with (its explainer's defaults).
_EXPLAIN = ExplainLimits()

PRIVILEGES: Mapping[str, Privilege] = {
    f"{SERVICE_INTERFACE}.GetInfo": Privilege(
        Caller.ANYONE, "the daemon's vendor, product, version and interface names"),
    f"{SERVICE_INTERFACE}.GetInterfaceDescription": Privilege(
        Caller.ANYONE, "the IDL text of an interface"),
    f"{INTERFACE}.GetStatus": Privilege(
        Caller.ANYONE, "the daemon's state and counters (memory)"),
    f"{INTERFACE}.ListDevices": Privilege(
        Caller.ANYONE, "the daemon's records of devices; for one device the daemon has a "
                       "record of, its attributes under `/sys`"),
    f"{INTERFACE}.ListModules": Privilege(
        Caller.ANYONE, "the daemon's records of modules; `/sys/module/NAME` for a module "
                       "named"),
    f"{INTERFACE}.Why": Privilege(
        Caller.ANYONE, "the daemon's records; for a devpath, that device's attributes under "
                       "`/sys` (no `..`, no NUL); the module index and modprobe.d"),
    f"{INTERFACE}.Explain": Privilege(
        Caller.ANYONE, "for a module or alias: the module index, modprobe.d, the module's "
                       "file found through the index, `/sys/module`, kernel log lines naming "
                       "it (only for root and the admin group while kernel.dmesg_restrict is "
                       "set); for a path: that file", by_path=Caller.ADMIN,
        limits=f"each in a worker process of its own; {_EXPLAIN.workers} at a time and "
               f"{_EXPLAIN.waiting} waiting, else `Busy`; answered within "
               f"{_EXPLAIN.deadline:g} s, else `TimedOut` (the worker is killed)"),
    f"{INTERFACE}.Load": Privilege(
        Caller.ADMIN, "the module index, modprobe.d, module files",
        "inserts modules; runs modprobe.d `install` commands"),
    f"{INTERFACE}.Unload": Privilege(
        Caller.ADMIN, "the module index, modprobe.d, `/sys/module`",
        "removes modules; runs modprobe.d `remove` commands"),
    f"{INTERFACE}.Reload": Privilege(
        Caller.ADMIN, "the module index and modprobe.d",
        "replaces the daemon's index and configuration snapshot"),
    f"{INTERFACE}.Monitor": Privilege(
        Caller.ANYONE, "the daemon's events as they happen (the journal's daemon messages, "
                       "uevents, outcomes)",
        limits=f"a client {MONITOR_QUEUE} events behind is ended with `MonitorOverrun`"),
}


#: The parameter of a method whose row has `by_path`: the one that may name a file.
PATH_PARAMETERS: Mapping[str, str] = {"Explain": "module"}


def privilege_table() -> str:
    """`PRIVILEGES` as the Markdown table docs/privileges.md shows (a test compares them)."""
    lines = ["| Method | Who may call it | What it may read | What it may change | "
             "Its own limits |", "|---|---|---|---|---|"]
    for method, p in PRIVILEGES.items():
        who = p.caller.value
        if p.by_path is not None:
            who += f"; a file by path: {p.by_path.value}"
        lines.append(f"| `{method}` | {who} | {p.reads} | {p.changes} | {p.limits} |")
    return "\n".join(lines) + "\n"


def names_a_file(target: str) -> bool:
    """Whether an Explain target names a file, not a module or alias: it has a `/` (what
    `kmodctl explain` sends for a path) or a module file's extension (which no module
    name has; diagnose takes `foo.ko` for a file in the daemon's working directory)."""
    return "/" in target or path_ends_with_kmod_ext(target)


def devpath_problem(target: str) -> str | None:
    """Why a Why target that starts with `/` is not a devpath the daemon may look up."""
    if "\0" in target:
        return "a devpath has no NUL character"
    if ".." in target.split("/"):
        return "a devpath has no '..' component"
    return None

class ReloadFailed(Exception):
    """ControlState.reload could not build a new snapshot (the old one stays)."""


class ControlState(Protocol):
    """What the control handlers read and ask of the daemon (phase 2 implements it)."""

    def status(self) -> StatusView: ...

    def statistics(self) -> StatisticsView: ...

    def devices(self, devpath: str | None) -> Sequence[DeviceView]: ...

    def modules(self, name: str | None) -> Sequence[ModuleView]: ...

    def why(self, target: str) -> WhyView | None: ...

    async def explain(self, module: str, *, kernel_log: bool) -> ExplanationView: ...

    def dmesg_restricted(self) -> bool:
        """Whether only privileged users may read the kernel log (kernel.dmesg_restrict)."""
        ...

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
        max_connections_per_user=settings.control_max_connections_per_user,
        reserved_connections=settings.control_reserved_connections,
        request_rate=settings.control_request_rate,
        request_burst=settings.control_request_burst,
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


def is_admin(peer: Peer, admin: int | None) -> bool:
    """Root, or a member (primary or supplementary) of the admin group."""
    if peer.uid == 0:
        return True
    return admin is not None and (peer.gid == admin or admin in peer.groups)


def may_change(call: Call, admin: int | None) -> bool:
    """Root, or a member of the admin group, may call changing methods."""
    return is_admin(call.peer, admin)


#: Where build_service's log lines go: (priority, kind, text), the daemon's Reporter.log.
Log = Callable[[Priority, Message, str], None]


class ControlLog:
    """The control socket's log lines, each kind rate-limited (REFUSAL_LOG_INTERVAL)."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._refusals = LogThrottle(REFUSAL_LOG_INTERVAL)
        self._internal = LogThrottle(INTERNAL_ERROR_LOG_INTERVAL)

    def refused(self, peer: Peer, reason: str) -> None:
        """A connection refused, or a request slowed, by a limit: one warning per uid per
        interval."""
        held = self._refusals.admit(peer.uid, time.monotonic())
        if held is None:
            return
        self._log(Priority.WARNING, Message.CLIENT_OVER_LIMITS,
                  f"Control client over its limits (uid {peer.uid}, pid {peer.pid}): "
                  f"{reason}{held_note(held)}")

    def internal_error(self, method: str, error: BaseException) -> None:
        """A handler failed: one error line per method per interval."""
        held = self._internal.admit(method, time.monotonic())
        if held is None:
            return
        self._log(Priority.ERR, Message.INTERNAL_ERROR,
                  f"Internal error in {method!a}: {type(error).__name__}: "
                  f"{ascii(str(error))[1:-1]}{held_note(held)}")


def build_service(
    state: ControlState,
    hub: EventHub,
    *,
    version: str,
    url: str = "",
    admin_group: str = "",
    limits: Limits | None = None,
    check_replies: bool = False,
    log: Log | None = None,
) -> VarlinkService:
    """A VarlinkService implementing io.kmodd on top of `state`, authorising from
    `PRIVILEGES`; refusals and internal errors go to `log`, rate-limited."""
    admin = admin_gid(admin_group)
    said = ControlLog(log) if log is not None else None
    service = VarlinkService(
        vendor="kmodd",
        product="kmodd",
        version=version,
        url=url,
        errors=PROTOCOL_ERRORS,
        limits=limits,
        check_replies=check_replies,
        privileged=lambda peer: is_admin(peer, admin),
        on_refusal=said.refused if said is not None else None,
        on_internal_error=said.internal_error if said is not None else None,
    )
    admins = f"root or members of group {admin_group!r}" if admin is not None else "root"

    def authorize(call: Call) -> VarlinkError | None:
        if may_change(call, admin):
            return None
        return VarlinkError(f"{SERVICE_INTERFACE}.PermissionDenied")

    def authorize_paths(parameter: str) -> Callable[[Call], VarlinkError | None]:
        def check(call: Call) -> VarlinkError | None:
            target = call.parameters[parameter]
            if not names_a_file(target) or may_change(call, admin):
                return None
            # Refused before anything is opened: the reply is the same whether the file
            # exists or not, and what it is (a FIFO, a device) never matters.
            return VarlinkError(f"{INTERFACE}.PermissionDenied", {"reason": (
                f"only {admins} may have kmodd explain a file by path; name the module or "
                "alias instead, or run `kmodctl explain` as root")})
        return check

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
        problem = devpath_problem(target) if target.startswith("/") else None
        if problem is not None:
            raise VarlinkError(f"{SERVICE_INTERFACE}.InvalidParameter",
                               {"parameter": "target"})
        report = state.why(target)
        if report is None:
            raise VarlinkError(f"{INTERFACE}.NoSuchDevice", {"devpath": target})
        return {"report": to_wire(report)}

    async def explain(call: Call) -> Mapping[str, Any]:

        view = await state.explain(call.parameters["module"],
                                   kernel_log=may_change(call, admin)
                                   or not state.dmesg_restricted())
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
    for name, method in handlers.items():
        row = PRIVILEGES[f"{INTERFACE}.{name}"]
        if row.caller is Caller.ADMIN:
            handlers[name] = dataclasses.replace(method, authorize=authorize)
        elif row.by_path is Caller.ADMIN:
            handlers[name] = dataclasses.replace(
                method, authorize=authorize_paths(PATH_PARAMETERS[name]))
    service.add_interface(IDL, handlers)
    missing = {f"{i}.{m}" for i, iface in service.interfaces.items()
               for m in iface.methods} ^ set(PRIVILEGES)
    if missing:
        raise AssertionError(f"methods without a row in PRIVILEGES (or rows without a method): "
                             f"{sorted(missing)}")
    return service
