"""Every outcome told once: one journal record, one Monitor event, one count.

`Reporter.outcome` is the only way an outcome leaves the daemon. It builds the journal
record (`system.journal.OutcomeRecord`: MESSAGE, PRIORITY, MESSAGE_ID of its kind and the
KMODD_* fields), hands the same facts to Monitor subscribers (`daemon.events.EventHub`)
and counts the outcome for GetStatus. Records below the configured level are counted and
streamed but not written.
Levels, wording and a failure's cause in plain words come from `core.autoload.outcome`; a
failure also carries the kernel's own lines about the module.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from kmodd.core.autoload.messages import MESSAGE_IDS, Message, outcome_message
from kmodd.core.autoload.outcome import Diagnosis, Outcome, Request, log_level, message
from kmodd.core.kmod.libkmodlog import strerror
from kmodd.daemon.events import EventHub, EventView
from kmodd.system.journal import LogSink, OutcomeRecord, Priority, log_wrapper

#: `log_level` setting -> the least important priority that is written.
LEVEL_NAMES = {p.name.lower(): p for p in Priority}
#: Kernel log lines quoted in one record at most.
KERNEL_LINES_MAX = 8


@dataclass(frozen=True, slots=True)
class Where:
    """The device an outcome is for (nothing, for an explicit request), or the place of a
    static list that names the module (`listed`: `/etc/modules-load.d/foo.conf:3`)."""

    devpath: str | None = None
    modalias: str | None = None
    seqnum: int | None = None  # None for coldplug and resync (their events have none)
    listed: str | None = None


NOWHERE = Where()


@dataclass(frozen=True, slots=True)
class Facts:
    """What one outcome is about."""

    outcome: Outcome
    module: str | None = None
    key: str = ""  # the looked-up name (a modalias, or a module name)
    where: Where = NOWHERE
    errno: int | None = None
    duration_usec: int | None = None
    diagnosis: Diagnosis | None = None
    kernel_lines: tuple[str, ...] = ()
    detail: str = ""
    kernel_denied: bool = False
    sentence: str | None = None  # replaces systemd's sentence (e.g. for a failed removal)


def describe(facts: Facts) -> str:
    """The record's MESSAGE: systemd's sentence, then for failures `: strerror`, the cause
    and what the kernel said, then where it came from."""
    name = facts.module or facts.key
    text = facts.sentence or message(facts.outcome, name, facts.key,
                                     kernel_denied=facts.kernel_denied)
    if facts.outcome is Outcome.FAILED and facts.errno:
        text += f": {strerror(facts.errno)}"
        if facts.diagnosis is not None:
            text += f" ({facts.diagnosis.cause.value}: {facts.diagnosis.explanation})"
    if facts.detail:
        text += f"; {facts.detail}"
    if facts.kernel_lines:
        shown = facts.kernel_lines[:KERNEL_LINES_MAX]
        text += "; kernel: " + " | ".join(shown)
    devpath = facts.where.devpath
    if devpath and facts.outcome is not Outcome.NOT_FOUND:
        text += f" [{devpath}]"
    elif devpath:
        text += f" for {devpath}"
    if facts.where.listed:
        text += f" [listed in {facts.where.listed}]"
    return text


class Reporter:
    """Journal, Monitor and counters for outcomes and daemon events."""

    def __init__(self, sink: LogSink, hub: EventHub, level: str, started: float) -> None:
        self.sink = sink
        self.hub = hub
        self.max_priority = LEVEL_NAMES.get(level, Priority.INFO)
        self.started = started
        self.outcomes: Counter[str] = Counter()

    def usec(self, monotonic: float | None = None) -> int:
        """Microseconds since the daemon started (the control interface's clock)."""
        now = time.monotonic() if monotonic is None else monotonic
        return int((now - self.started) * 1_000_000)

    @log_wrapper
    def outcome(self, facts: Facts, request: Request, *, quiet: bool = False) -> None:
        """Tell one outcome. `quiet`: at debug level whatever it is (a repeat of a told one)."""
        self.outcomes[facts.outcome.value] += 1
        cause = facts.diagnosis.cause if facts.diagnosis is not None else None
        priority = (Priority.DEBUG if quiet
                    else log_level(facts.outcome, request, cause))
        text: str | None = None
        if priority <= self.max_priority:
            text = describe(facts)
            where = facts.where
            self.sink.outcome(OutcomeRecord(
                message=text, priority=priority, outcome=facts.outcome.value,
                message_id=MESSAGE_IDS[outcome_message(facts.outcome, cause)],
                module=facts.module, modalias=where.modalias, devpath=where.devpath,
                seqnum=where.seqnum, listed=where.listed, errno=facts.errno or None,
                duration_usec=facts.duration_usec,
                diagnosis=cause.value if cause is not None else None))
        if self.hub.subscribers:
            self.hub.publish(EventView(facts.outcome.value, self.usec(),
                                       text if text is not None else describe(facts),
                                       facts.where.devpath, facts.where.modalias,
                                       facts.module, facts.outcome.value))

    @log_wrapper
    def log(self, priority: Priority, message: Message, text: str, kind: str | None = None,
            **fields: str) -> None:
        """A daemon message (start, reload, resync...) of kind `message` (its MESSAGE_ID);
        `kind` also streams it to Monitor."""
        if priority <= self.max_priority:
            self.sink.log(priority, text, MESSAGE_ID=MESSAGE_IDS[message], **fields)
        if kind is not None and self.hub.subscribers:
            self.hub.publish(EventView(kind, self.usec(), text))

    def event(self, kind: str, text: str, devpath: str | None = None,
              modalias: str | None = None) -> None:
        """A Monitor-only event (uevents are too many for the journal)."""
        if self.hub.subscribers:
            self.hub.publish(EventView(kind, self.usec(), text, devpath, modalias))
