"""Events as `Monitor` subscribers see them, and the hub that fans them out.

The reporter publishes an `EventView` for every outcome and lifecycle message; each
subscriber has its own bounded queue, so a slow client never slows the daemon: it loses
events and its stream ends with `MonitorOverrun` (io.kmodd's error of that name).
This module is what the daemon needs of the control plane from its first instant; the rest
(`control`, `varlink`, `state`) is loaded when a client first connects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

#: Events buffered per Monitor subscriber; a subscriber that falls further behind is ended
#: with MonitorOverrun rather than slowing the daemon.
MONITOR_QUEUE = 1024


@dataclass(frozen=True, slots=True)
class EventView:
    kind: str
    usec: int
    message: str
    devpath: str | None = None
    modalias: str | None = None
    module: str | None = None
    outcome: str | None = None


class MonitorOverrun(Exception):
    """A subscriber fell more than MONITOR_QUEUE events behind; `lost` were dropped."""

    def __init__(self, lost: int) -> None:
        super().__init__(f"{lost} events lost")
        self.lost = lost


class _Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[EventView] = asyncio.Queue(MONITOR_QUEUE)
        self.lost = 0


class EventHub:
    """Fans events out to Monitor subscribers without ever blocking the publisher."""

    def __init__(self) -> None:
        self._subscribers: set[_Subscription] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: EventView) -> None:
        for sub in self._subscribers:
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.lost += 1

    async def stream(self) -> AsyncIterator[EventView]:
        """Events from now on; raises MonitorOverrun once this subscriber fell behind."""
        sub = _Subscription()
        self._subscribers.add(sub)
        try:
            while True:
                if sub.lost and sub.queue.empty():
                    raise MonitorOverrun(sub.lost)
                yield await sub.queue.get()
        finally:
            self._subscribers.discard(sub)
