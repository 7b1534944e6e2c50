"""What GetStatus reports about the daemon itself: its state and when it got there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Lifecycle:
    """What GetStatus reports about the daemon itself (set by the service)."""

    started: float  # time.monotonic() at start
    kernel_release: str
    state: str = "starting"
    ready: float | None = None
    coldplug_done: bool = False
    dry_run: bool = False
