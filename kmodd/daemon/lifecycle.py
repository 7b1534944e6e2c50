"""What GetStatus reports about the daemon itself: its state, when it got there, and why
it runs degraded if it does."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kmodd.core.autoload.loadrecords import Instance


class DaemonState(StrEnum):
    """The IDL's DaemonState: what the daemon is doing as a whole."""

    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"  # no usable module index: listening, loading nothing
    RELOADING = "reloading"
    STOPPING = "stopping"


@dataclass(slots=True)
class Lifecycle:
    """What GetStatus reports about the daemon itself (set by the service)."""

    started: float  # time.monotonic() at start
    kernel_release: str
    state: DaemonState = DaemonState.STARTING
    ready: float | None = None
    coldplug_done: bool = False
    dry_run: bool = False
    #: Why the daemon runs degraded (no usable module index), None when it does not:
    #: it keeps listening, and loads again once a reload succeeds.
    degraded_reason: str | None = None
    #: The instance of this boot before this one (from the record file), if any; how many
    #: of the modules live at start it loaded, and how many while it ended.
    previous: Instance | None = None
    previous_modules: int = 0
    previous_unfinished: int = 0
    #: Why the record file is not kept, None while it is.
    records_failure: str | None = None
    #: Whether and how the kernel's own module requests are recorded (daemon.kernelrequests).
    kernel_requests: str | None = None

    @property
    def settled_state(self) -> DaemonState:
        """The state between reloads: degraded while there is no usable index."""
        return (DaemonState.DEGRADED if self.degraded_reason is not None
                else DaemonState.RUNNING)
