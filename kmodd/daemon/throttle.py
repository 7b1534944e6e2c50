"""Rate limits for what strangers can make the daemon do: a token bucket, a log throttle.

`TokenBucket` meters requests on one control connection (a request over the rate waits for
its token). `LogThrottle` keeps a flood of
the same complaint (refused connections, rejected uevents, internal errors) from flooding
the journal: at most one line per key per interval, and the line that is let through
says how many were held back since the last one. Both take the time as an argument
(`time.monotonic()` in the daemon), so they are plain logic and tests need no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Keys a LogThrottle remembers; past this, keys quiet for a whole interval are forgotten
#: (a flood of distinct keys costs bounded memory, at worst an extra line each).
MAX_THROTTLE_KEYS = 1024


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; each request takes one."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def delay(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until it is earned (the
        caller waits that long; the token is spoken for meanwhile)."""
        elapsed = max(now - self._last, 0.0)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate) - 1.0
        return 0.0 if self._tokens >= 0.0 else -self._tokens / self.rate


@dataclass(slots=True)
class _Window:
    logged: float  # when the last line for this key was let through
    held: int = 0  # lines held back since


class LogThrottle:
    """At most one log line per key per `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._windows: dict[object, _Window] = {}

    def admit(self, key: object, now: float) -> int | None:
        """None: hold this line back (it is counted). Otherwise log it, and say that the
        returned number of lines for the same key were held back before it."""
        window = self._windows.get(key)
        if window is not None and now - window.logged < self.interval:
            window.held += 1
            return None
        held = window.held if window is not None else 0
        if window is None and len(self._windows) >= MAX_THROTTLE_KEYS:
            self._forget_quiet(now)
        self._windows[key] = _Window(now)
        return held

    def _forget_quiet(self, now: float) -> None:
        quiet = [k for k, w in self._windows.items() if now - w.logged >= self.interval]
        for k in quiet or list(self._windows)[: MAX_THROTTLE_KEYS // 2]:
            del self._windows[k]


def held_note(held: int) -> str:
    """The tail of a throttled line: how many like it were held back before it."""
    if not held:
        return ""
    return f" ({held} more like this not logged since the previous one)"
