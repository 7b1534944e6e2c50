"""The kernel's own module requests and loads, as its tracepoints print them; the autoload
policy for those requests.

When a kernel subsystem needs a module it does not have (a socket family, a filesystem, a
crypto algorithm, a character major), `request_module()` runs the usermode helper
`kernel.modprobe` (kmod's `/sbin/modprobe -q -- ALIAS`) and fires the tracepoint
`module:module_request`; every module that goes live fires `module:module_load`
(`include/trace/events/module.h`, Linux 6.1):

    module_request  TP_printk("%s wait=%d call_site=%ps", name, wait, ip)
    module_load     TP_printk("%s %s", name, show_module_flags(taints))

(the flags are the taint letters P, O, F, C, E, none for a clean module: the line then ends
with a space). tracefs prints each event with the task that fired it in front
(`kernel/trace/trace_output.c`): `COMM-PID [CPU] FLAGS SECONDS.USEC: EVENT: FIELDS`, the
command right-aligned in 16 columns, the flags column (irqs-off, need-resched, hardirq,
preempt-depth, migrate-disable) present unless the instance's `irq-info` option is off, and
`(TGID)` after the pid with `record-tgid` on. The command may hold spaces and dashes; the pid
is the last `-DIGITS` before the CPU column. `<...>` stands for a command the trace's cache
lost. A reader that fell behind gets `CPU:N [LOST M EVENTS]`.

A request comes from the task that needed the module (`mount` for `fs-cramfs`, the program
that opened the socket for `net-pf-21`); the module is then loaded by the helper, so its
`module_load` names `modprobe`. `KernelRequests` pairs them: a load by the helper, or of a
module the request's alias resolves to, while a request waits, belongs to that request.

`parse_line` never raises: a line it cannot read is a `TraceDrop` with a reason, as
`core.autoload.uevent` does for datagrams.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

#: The tracepoints kmodd enables in its own trace instance.
EVENTS = ("module/module_request", "module/module_load")
#: The command the kernel's usermode helper runs under (`kernel.modprobe`'s base name).
HELPER_COMMAND = "modprobe"
#: A request still waiting for its module after this many seconds of trace time loaded
#: nothing (the helper gives up long before: modprobe -q of an unknown alias ends at once).
REQUEST_WAIT_MAX = 30.0
#: A load by the helper this soon after a request that waits is taken for its dependency.
HELPER_WINDOW = 5.0
#: Longest line read from the trace (an alias is at most MODULE_NAME_LEN-ish; the kernel's
#: request_module buffer is 64 bytes).
MAX_LINE = 1024

_HEAD = re.compile(
    r"\s*(?P<comm>.*)-(?P<pid>\d{1,10})\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d{1,5})\]\s+"
    r"(?:[^\s:]{4,6}\s+)?(?P<secs>\d{1,12}\.\d{1,9}):\s(?P<event>[A-Za-z0-9_]+):\s?"
    r"(?P<fields>.*)")
_REQUEST = re.compile(r"(?P<name>\S.*?) wait=(?P<wait>[01]) call_site=(?P<site>\S*)")
_LOAD = re.compile(r"(?P<name>[^\s]+) ?(?P<taints>[POFCE]*) ?")
_LOST = re.compile(r"CPU:(?P<cpu>\d+) \[LOST (?P<count>\d+) EVENTS\]")
#: What an alias in the deny list may hold: the characters of the kernel's request names
#: (`net-pf-10-proto-132`, `fs-cramfs`, `crypto-hmac(sha256)`, `char-major-10-200`).
_ALIAS = re.compile(r"[A-Za-z0-9_.:()+,@-]{1,64}")


class TraceDropReason(StrEnum):
    """Every way a trace line can fail to be an event kmodd reads."""

    EMPTY = "empty"
    TOO_LONG = "too-long"
    NOT_AN_EVENT = "not-an-event"  # no `COMM-PID [CPU] ... SECONDS: EVENT:` head
    OTHER_EVENT = "other-event"  # an event kmodd did not enable
    BAD_REQUEST = "bad-module-request"
    BAD_LOAD = "bad-module-load"


@dataclass(frozen=True, slots=True)
class Task:
    """The task that fired an event: its command (None: the trace lost it, `<...>`) and pid."""

    comm: str | None
    pid: int

    @property
    def words(self) -> str:
        return f"`{self.comm}` (pid {self.pid})" if self.comm else f"pid {self.pid}"


@dataclass(frozen=True, slots=True)
class ModuleRequest:
    """`module:module_request`: the kernel asked for `alias` on behalf of `task`."""

    task: Task
    time: float  # seconds, on the trace instance's clock
    alias: str
    wait: bool
    call_site: str  # the kernel function that asked (`get_fs_type`, `__sock_create`...)


@dataclass(frozen=True, slots=True)
class ModuleLoad:
    """`module:module_load`: `module` went live, inserted by `task`."""

    task: Task
    time: float
    module: str
    taints: str  # the taint letters, "" for none


@dataclass(frozen=True, slots=True)
class Lost:
    """The reader fell behind: the kernel overwrote `count` events of one CPU."""

    count: int


@dataclass(frozen=True, slots=True)
class TraceDrop:
    """A line that is not an event kmodd reads, and why."""

    reason: TraceDropReason
    line: str

    def __str__(self) -> str:
        return f"trace line dropped ({self.reason}): {self.line[:120]!r}"


TraceEvent = ModuleRequest | ModuleLoad | Lost


def parse_line(line: str) -> TraceEvent | TraceDrop:
    """One line of a trace (`trace_pipe`, or `trace` without its `#` header lines)."""
    text = line.rstrip("\n")
    if not text.strip():
        return TraceDrop(TraceDropReason.EMPTY, text)
    if len(text) > MAX_LINE:
        return TraceDrop(TraceDropReason.TOO_LONG, text[:MAX_LINE])
    lost = _LOST.fullmatch(text.strip())
    if lost is not None:
        return Lost(int(lost.group("count")))
    head = _HEAD.fullmatch(text)
    if head is None:
        return TraceDrop(TraceDropReason.NOT_AN_EVENT, text)
    comm = head.group("comm").strip()
    task = Task(None if comm in ("", "<...>") else comm, int(head.group("pid")))
    time = float(head.group("secs"))
    event, fields = head.group("event"), head.group("fields")
    if event == "module_request":
        m = _REQUEST.fullmatch(fields.rstrip())
        if m is None:
            return TraceDrop(TraceDropReason.BAD_REQUEST, text)
        return ModuleRequest(task, time, m.group("name"), m.group("wait") == "1",
                             m.group("site"))
    if event == "module_load":
        m = _LOAD.fullmatch(fields)
        if m is None:
            return TraceDrop(TraceDropReason.BAD_LOAD, text)
        return ModuleLoad(task, time, m.group("name"), m.group("taints"))
    return TraceDrop(TraceDropReason.OTHER_EVENT, text)


@dataclass(frozen=True, slots=True)
class Answered:
    """What came of a kernel request: a module that went live for it, or none (nothing was
    loaded, or the policy refused it)."""

    request: ModuleRequest
    modules: tuple[str, ...]
    refused: bool = False  # the alias is on the autoload deny list

    @property
    def words(self) -> str:
        """`requested by the kernel for `mount` (pid 812): fs-cramfs`."""
        return f"requested by the kernel for {self.request.task.words}: {self.request.alias}"


@dataclass(slots=True)
class _Pending:
    request: ModuleRequest
    expected: frozenset[str]
    modules: list[str] = field(default_factory=list)


class KernelRequests:
    """Pairs the kernel's requests with the loads that answer them.

    `resolve(alias)`: the modules the alias resolves to now that are not live or built in
    (the request's own, not its dependencies); none: the helper will load nothing. A load
    of one of them while the request waits answers it; a load by the helper (`modprobe`)
    within HELPER_WINDOW of the request is one of its dependencies. (`modprobe` is also what
    systemd's modprobe@.service and admins run: the window keeps their loads apart from a
    request's.) `denied`: the aliases the policy refuses.
    `feed` returns what became known at once: a load paired with its request (one `Answered`
    per module, as it goes live), a refused request; a request that waited REQUEST_WAIT_MAX
    without a load ends with an `Answered` without modules (`expire`, `flush`).
    """

    def __init__(self, resolve: Callable[[str], frozenset[str]],
                 denied: Iterable[str] = ()) -> None:
        self._resolve = resolve
        self.denied = frozenset(denied)
        self._pending: list[_Pending] = []
        #: module -> the request it went live for (the latest)
        self.loaded_for: dict[str, ModuleRequest] = {}

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def feed(self, event: TraceEvent) -> list[Answered]:
        if isinstance(event, Lost):
            return []
        out = self.expire(event.time)
        if isinstance(event, ModuleRequest):
            expected = self._resolve(event.alias)
            if event.alias in self.denied:
                out.append(Answered(event, (), refused=True))
            elif not expected:
                out.append(Answered(event, ()))  # no module to load: the helper loads none
            else:
                self._pending.append(_Pending(event, expected))
            return out
        pending = self._owner(event)
        if pending is not None:
            pending.modules.append(event.module)
            self.loaded_for[event.module] = pending.request
            if event.module in pending.expected:
                self._pending.remove(pending)
            out.append(Answered(pending.request, (event.module,)))
        return out

    def _owner(self, load: ModuleLoad) -> _Pending | None:
        for pending in self._pending:
            if load.module in pending.expected:
                return pending
        if load.task.comm != HELPER_COMMAND:
            return None
        for pending in self._pending:  # a dependency the helper loads first
            if load.time - pending.request.time <= HELPER_WINDOW:
                return pending
        return None

    def expire(self, now: float) -> list[Answered]:
        """End the requests that waited longer than REQUEST_WAIT_MAX at `now`: those that
        loaded nothing are told as such."""
        late = [p for p in self._pending if now - p.request.time > REQUEST_WAIT_MAX]
        for p in late:
            self._pending.remove(p)
        return [Answered(p.request, ()) for p in late if not p.modules]

    def flush(self) -> list[Answered]:
        done, self._pending = self._pending, []
        return [Answered(p.request, ()) for p in done if not p.modules]


# -- the autoload policy -----------------------------------------------------------------

#: The command an `install` line of the policy runs: fails at once, loads nothing.
REFUSE_COMMAND = "/bin/false"


def parse_deny_list(text: str) -> tuple[tuple[str, ...], list[str]]:
    """The aliases of the setting's value (words separated by spaces or commas, in order,
    once each), and a problem per word that is not an alias."""
    aliases: list[str] = []
    problems: list[str] = []
    for word in re.split(r"[\s,]+", text.strip()):
        if not word:
            continue
        if not _ALIAS.fullmatch(word) or "*" in word:
            problems.append(f"{word[:80]!r} is not a module alias")
        elif word not in aliases:
            aliases.append(word)
    return tuple(aliases), problems


def policy_text(aliases: Iterable[str]) -> str:
    """The policy file for the deny list: one `install ALIAS /bin/false` per alias.

    libkmod looks a name up as, in order, a modprobe.d `alias`, a module in modules.dep, a
    built-in or symbol, an `install` command of that exact name, and only then modules.alias
    (`kmod_module_new_from_lookup`). So `install net-pf-33 /bin/false` makes the kernel's
    `modprobe -q -- net-pf-33` run /bin/false and load nothing, while `modprobe rds` (the
    module's own name) still loads it; an allowed alias is looked up as before, no slower.
    """
    lines = ["# Written by kmodd from its autoload_deny setting; do not edit (kmodd.conf(5)).",
             "# The kernel's requests for these aliases run /bin/false and load nothing;",
             "# modprobe of the module's own name still loads it."]
    lines += [f"install {alias} {REFUSE_COMMAND}" for alias in aliases]
    return "\n".join(lines) + "\n"


# -- the boot before kmodd -----------------------------------------------------------------

#: The kernel's line when it starts the initramfs' init (`init/main.c`: "Run %s as init
#: process", for rdinit= and for init=; the initramfs' is the first).
RUN_INIT = re.compile(r"Run (\S+) as init process")
#: systemd in an initrd says this as it switches to the real root.
SWITCHING_ROOT = "Switching root."
#: systemd's first line as PID 1 ("systemd 252.39-1~deb12u1 running in system mode ...").
SYSTEMD_STARTED = re.compile(r"systemd\[1\]: systemd \S+ running in system mode")


@dataclass(frozen=True, slots=True)
class BootLoad:
    """How a module live before kmodd went live, as the boot's trace says."""

    module: str
    task: Task
    time: float  # seconds on the trace's clock
    request: ModuleRequest | None  # the kernel's request it answered, if any
    initramfs: bool  # before the switch to the real root


@dataclass(frozen=True, slots=True)
class SwitchRoot:
    """When the boot left its initramfs: `time` on the kernel log's clock; `exact` when an
    initrd's systemd said so, else the first sign of the real root's systemd."""

    time: float
    exact: bool


#: The real root's init when it is systemd: its first event in a trace is after the switch.
SYSTEMD_PID1 = Task("systemd", 1)


def switch_root_time(lines: Iterable[tuple[float, str]]) -> SwitchRoot | None:
    """When the boot left its initramfs, from the kernel log's (seconds, text): systemd's
    "Switching root." in an initrd run by systemd (exact); else, when the kernel ran an
    initramfs' init, the first line of systemd as PID 1 at the latest (an initramfs-tools
    initrd has no systemd; systemd loads its first modules before that line, so the trace's
    first event of PID 1 may come earlier: `boot_loads` takes the earlier of the two).
    None when neither is there (no initramfs, another init, or a log that wrapped)."""
    ran_init: float | None = None
    systemd_after_init: float | None = None
    for seconds, text in lines:
        if SWITCHING_ROOT in text:
            return SwitchRoot(seconds, True)
        if ran_init is None and RUN_INIT.search(text):
            ran_init = seconds
        elif (ran_init is not None and systemd_after_init is None
              and SYSTEMD_STARTED.search(text)):
            systemd_after_init = seconds
    return None if systemd_after_init is None else SwitchRoot(systemd_after_init, False)


def boot_loads(lines: Iterable[str], resolve: Callable[[str], frozenset[str]],
               switch_root: SwitchRoot | None) -> dict[str, BootLoad]:
    """Module -> its latest load in a trace of the boot (the global buffer, when the kernel
    command line enabled `trace_event=module:module_load,module:module_request`), paired
    with the kernel's request it answered. Lines that are not events are skipped."""
    events = [e for e in map(parse_line, lines) if isinstance(e, (ModuleRequest, ModuleLoad))]
    switch = switch_root.time if switch_root is not None else None
    if switch_root is not None and not switch_root.exact:
        first_pid1 = next((e.time for e in events if e.task == SYSTEMD_PID1), None)
        if first_pid1 is not None and first_pid1 < switch_root.time:
            switch = first_pid1
    requests = KernelRequests(resolve)
    loads: dict[str, BootLoad] = {}
    for event in events:
        requests.feed(event)
        if isinstance(event, ModuleLoad):
            request = requests.loaded_for.get(event.module)
            if request is not None and request.time > event.time:
                request = None
            initramfs = switch is not None and event.time < switch
            loads[event.module] = BootLoad(event.module, event.task, event.time, request,
                                           initramfs)
    return loads
