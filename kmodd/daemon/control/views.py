"""The values the control handlers return: one frozen dataclass per type of
`io.kmodd.varlink` (a test holds each to its type, field by field), and `to_wire`, which
turns them into the JSON the interface sends."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kmodd.core.explain.model import Explanation
from kmodd.daemon.lifecycle import DaemonState


class ModuleState(StrEnum):
    """The IDL's ModuleState: the kernel's states of a module (core.kmod.initstate's
    InitState, by value), and two of kmodd's own."""

    BUILTIN = "builtin"
    LIVE = "live"
    COMING = "coming"
    GOING = "going"
    LOADING = "loading"  # kmodd is inserting it now
    NOT_LOADED = "not-loaded"


@dataclass(frozen=True, slots=True)
class StatusView:
    version: str
    state: DaemonState
    pid: int
    kernel_release: str
    uptime_usec: int
    ready_usec: int | None
    coldplug_done: bool
    index_generation: int
    dry_run: bool
    degraded_reason: str | None = None
    previous_instance: PreviousInstanceView | None = None
    records_failure: str | None = None
    kernel_requests: str | None = None


@dataclass(frozen=True, slots=True)
class PreviousInstanceView:
    pid: int
    started: float  # seconds since the epoch
    stopped: bool
    modules: int
    unfinished: int


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
    reprobe: ReprobeView | None = None


@dataclass(frozen=True, slots=True)
class ReprobeView:
    result: str
    reason: str
    driver: str | None
    errno: int | None
    finished_usec: int


@dataclass(frozen=True, slots=True)
class ModuleView:
    name: str
    state: ModuleState
    outcome: str | None = None
    errno: int | None = None
    devices: tuple[str, ...] = ()
    started_usec: int | None = None
    finished_usec: int | None = None
    loaded_by: str | None = None
    loaded_by_pid: int | None = None
    queued_usec: int | None = None
    after: str | None = None
    device: str | None = None


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
    explanation: Explanation  # sent in kmodd.core.explain.model's wire form
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
