"""The kernel's own module requests: read from kmodd's trace instance, paired with the loads
that answer them (`core.autoload.ktrace`), noted in the records and told to the journal; and
the autoload policy file for the `autoload_deny` setting.

kmodd never stands in the kernel's request path: the kernel runs kmod's modprobe as before,
and kmodd reads what happened from the trace instance's pipe when the event loop finds it
readable (the descriptor never blocks). A refused request is one for an alias on the deny
list: the policy file makes the kernel's modprobe run /bin/false for it, so nothing loads.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from kmodd.core.autoload.ktrace import (
    Answered,
    KernelRequests,
    Lost,
    ModuleRequest,
    TraceDrop,
    parse_deny_list,
    parse_line,
    policy_text,
)
from kmodd.core.autoload.messages import Message
from kmodd.core.runpaths import POLICY_FILE
from kmodd.daemon.lifecycle import Lifecycle
from kmodd.daemon.records import Records
from kmodd.daemon.report import Reporter
from kmodd.system.journal import Priority
from kmodd.system.root import Root
from kmodd.system.tracefs import TraceInstance, open_instance, write_policy

#: How often requests that wait are checked for their end (seconds).
EXPIRE_EVERY = 5.0
#: A request that loads nothing can be repeated at will by any local user (each socket() of an
#: unknown family makes one): after its record, the same alias's next ones are counted, not
#: told, for this many seconds, and the next record says how many there were.
REPEAT_QUIET = 60.0
#: Aliases whose last record is remembered at most (fs-NAME takes any name).
REPEAT_MEMORY = 1024


def apply_policy(root: Root, deny: str, reporter: Reporter) -> tuple[str, ...]:
    """Write (or remove, for an empty list) the policy file; the aliases denied."""
    aliases, _ = parse_deny_list(deny)  # the setting was checked when read
    path = root.path(POLICY_FILE)
    failure = write_policy(path, policy_text(aliases) if aliases else None)
    if failure is not None:
        reporter.log(Priority.WARNING, Message.AUTOLOAD_POLICY,
                     f"{failure}: the kernel's requests for {', '.join(aliases) or 'no alias'} "
                     "are not refused")
        return ()
    if aliases:
        reporter.log(Priority.INFO, Message.AUTOLOAD_POLICY,
                     f"Autoload policy written to {POLICY_FILE}: the kernel's requests for "
                     f"{', '.join(aliases)} are refused")
    return aliases


class KernelRequestWatch:
    """Reads kmodd's trace instance while the daemon runs (`run`, one task)."""

    def __init__(self, root: Root, reporter: Reporter, records: Records, lifecycle: Lifecycle,
                 resolve: Callable[[str], frozenset[str]], denied: tuple[str, ...],
                 ours: Callable[[str], bool]) -> None:
        self.root = root
        self.reporter = reporter
        self.records = records
        self.lifecycle = lifecycle
        self.ours = ours  # a module this daemon is inserting or just inserted
        self.tracker = KernelRequests(resolve, denied)
        self.instance: TraceInstance | None = None
        self.drops: Counter[str] = Counter()
        self.lost = 0
        self.requests = 0
        self.refused = 0
        self.latest: str | None = None
        self._told_at: dict[str, float] = {}  # alias -> when its last record was written
        self._untold: Counter[str] = Counter()  # alias -> requests counted since then

    def open(self) -> bool:
        """Make the trace instance; when there is none, say why once (status and journal)."""
        opened = open_instance(self.root)
        if isinstance(opened, str):
            self._unavailable(opened)
            return False
        self.instance = opened
        for problem in opened.problems:
            self.reporter.log(Priority.INFO, Message.TRACE_UNAVAILABLE, problem)
        self._status()
        return True

    def _unavailable(self, reason: str) -> None:
        self.lifecycle.kernel_requests = f"not recorded: {reason}"
        self.reporter.log(Priority.NOTICE, Message.TRACE_UNAVAILABLE,
                          f"The kernel's own module requests are not recorded: {reason}; a "
                          "module the kernel loads is known only as loaded without kmodd")

    def _status(self) -> None:
        assert self.instance is not None
        text = f"recorded through {self.instance.path}: {self.requests} requests"
        if self.refused:
            text += f", {self.refused} refused"
        if self.lost:
            text += f", {self.lost} events lost"
        if self.latest:
            text += f"; latest: {self.latest}"
        self.lifecycle.kernel_requests = text

    async def run(self) -> None:
        instance = self.instance
        if instance is None or instance.fd is None:
            return
        loop = asyncio.get_running_loop()
        fd = instance.fd
        loop.add_reader(fd, self.readable)
        try:
            while not instance.ended:
                await asyncio.sleep(EXPIRE_EVERY)
                for answered in self.tracker.expire(time.monotonic()):
                    self._tell(answered)
        finally:
            if not instance.ended:
                loop.remove_reader(fd)
            self.close()

    def close(self) -> None:
        if self.instance is None:
            return
        problem = self.instance.close()
        if problem is not None:
            self.reporter.log(Priority.WARNING, Message.TRACE_UNAVAILABLE, problem)

    def readable(self) -> None:
        """The pipe has lines: read them all now, without blocking."""
        instance = self.instance
        assert instance is not None
        for line in instance.lines():
            event = parse_line(line)
            if isinstance(event, TraceDrop):
                self.drops[event.reason] += 1
                continue
            if isinstance(event, Lost):
                self.lost += event.count
                continue
            if isinstance(event, ModuleRequest):
                self.requests += 1
            for answered in self.tracker.feed(event):
                self._tell(answered)
        if instance.ended and instance.fd is not None:
            asyncio.get_running_loop().remove_reader(instance.fd)
        self._status()

    def _repeats(self, alias: str) -> str | None:
        """None: a record for `alias` was written less than REPEAT_QUIET ago (this request
        is counted); else what the record adds about the requests counted since the last."""
        now = time.monotonic()
        last = self._told_at.get(alias)
        if last is not None and now - last < REPEAT_QUIET:
            self._untold[alias] += 1
            return None
        if last is None and len(self._told_at) >= REPEAT_MEMORY:
            self._told_at = {a: t for a, t in self._told_at.items() if now - t < REPEAT_QUIET}
            if len(self._told_at) >= REPEAT_MEMORY:  # a flood of names: forget the oldest
                oldest = min(self._told_at, key=self._told_at.__getitem__)
                del self._told_at[oldest]
            self._untold = Counter({a: n for a, n in self._untold.items() if a in self._told_at})
        self._told_at[alias] = now
        untold = self._untold.pop(alias, 0)
        return (f" ({untold} more such requests in the {now - last:.0f} s before this one)"
                if untold and last is not None else "")

    def _tell(self, answered: Answered) -> None:
        request = answered.request
        who = request.task.words
        fields = {"KMODD_ALIAS": request.alias, "KMODD_REQUESTER_PID": str(request.task.pid),
                  "KMODD_REQUESTER_COMM": request.task.comm or ""}
        if answered.refused:
            self.refused += 1
            self.latest = f"refused {request.alias} for {who}"
            repeats = self._repeats(request.alias)
            if repeats is not None:
                self.reporter.log(Priority.NOTICE, Message.KERNEL_REQUEST_REFUSED,
                                  f"Refused the kernel's request for {request.alias} from "
                                  f"{who}: denied by the autoload policy{repeats}", None,
                                  **fields)
            return
        if not answered.modules:
            self.latest = f"{request.alias} for {who}: nothing loaded"
            repeats = self._repeats(request.alias)
            if repeats is not None:
                self.reporter.log(Priority.INFO, Message.KERNEL_REQUEST,
                                  f"The kernel's request for {request.alias} from {who} loaded "
                                  f"no module{repeats}", None, **fields)
            return
        for module in answered.modules:
            if self.ours(module):
                continue
            self.records.note_kernel_request(module, request)
            self.latest = f"{module}: {answered.words}"
            self.reporter.log(Priority.INFO, Message.KERNEL_REQUEST,
                              f"Module {module} loaded: {answered.words}", None,
                              KMODD_MODULE=module, **fields)
