"""Where kmodd's log goes: structured journald records, or `<N>`-prefixed lines on stderr.

Every load outcome is one journal record whose fields name the module, the device and the
result (`OUTCOME_FIELDS`), so `journalctl KMODD_MODULE=foo` or `journalctl KMODD_OUTCOME=failed`
answers "what happened to my device". Records go through systemd-python's `journal.send`
when the journal socket exists; otherwise each record is one stderr line that starts with the
syslog priority in angle brackets (`<3>...`), which journald and the console both understand.

Every record carries a MESSAGE_ID (`core.autoload.messages`: its kind, which `journalctl -x`
explains from the catalog) and CODE_FILE, CODE_LINE and CODE_FUNC of the code that logged it: the
functions that only pass a record on (this module's sinks, the daemon's reporter) are marked
`@log_wrapper` and skipped.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import CodeType, FrameType
from typing import Any, BinaryIO, Protocol, TypeVar

from kmodd.core.priority import Priority as Priority
from kmodd.system.root import Root

#: The name every record carries (SYSLOG_IDENTIFIER=).
IDENTIFIER = "kmodd"
#: journald's native protocol socket.
JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: systemd-python's journal module (the PyPI package `systemd-python`, never `systemd`).
JOURNAL_MODULE = "systemd.journal"
#: Longest MESSAGE on stderr, in characters; longer ones are cut with "...".
MAX_STDERR_MESSAGE = 4096


class LogTarget(StrEnum):
    AUTO = "auto"
    JOURNAL = "journal"
    STDERR = "stderr"


#: Journal field for each OutcomeRecord attribute, in the order they are sent.
OUTCOME_FIELDS: Mapping[str, str] = {
    "message_id": "MESSAGE_ID",
    "module": "KMODD_MODULE",
    "modalias": "KMODD_MODALIAS",
    "devpath": "KMODD_DEVPATH",
    "seqnum": "KMODD_SEQNUM",
    "listed": "KMODD_LISTED_IN",
    "errno": "ERRNO",
    "outcome": "KMODD_OUTCOME",
    "duration_usec": "KMODD_DURATION_USEC",
    "diagnosis": "KMODD_DIAGNOSIS",
}


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """One load outcome as the journal records it. Absent values send no field."""

    message: str
    priority: Priority
    outcome: str
    message_id: str  # core.autoload.messages.MESSAGE_IDS of its kind
    module: str | None = None
    modalias: str | None = None
    devpath: str | None = None
    seqnum: int | None = None
    listed: str | None = None  # the static list's FILE:LINE that named the module
    errno: int | None = None
    duration_usec: int | None = None
    diagnosis: str | None = None  # a failure's core.autoload.outcome.Cause (bad-format...)

    def fields(self) -> dict[str, str]:
        """Every journal field of the record except MESSAGE and PRIORITY, as strings."""
        out: dict[str, str] = {}
        for attribute, name in OUTCOME_FIELDS.items():
            value = getattr(self, attribute)
            if value is not None:
                out[name] = str(value)
        return out


F = TypeVar("F", bound=Callable[..., Any])

#: Code of the functions that pass records on (`log_wrapper`): never a record's CODE_FUNC.
WRAPPERS: set[CodeType] = set()


def log_wrapper(function: F) -> F:
    """Mark `function` as one that passes records on: records name its caller instead."""
    WRAPPERS.add(function.__code__)
    return function


@dataclass(frozen=True, slots=True)
class CodeLocation:
    """Where a record was logged (CODE_FILE=, CODE_LINE=, CODE_FUNC=)."""

    file: str
    line: int
    function: str


def caller(frame: FrameType | None) -> CodeLocation | None:
    """The first frame from `frame` outwards that is not a `log_wrapper`."""
    while frame is not None and frame.f_code in WRAPPERS:
        frame = frame.f_back
    if frame is None:
        return None
    return CodeLocation(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


class LogSink(Protocol):
    """Where the daemon writes its records."""

    def outcome(self, record: OutcomeRecord) -> None: ...

    def log(self, priority: Priority, message: str, **fields: str) -> None: ...


class JournalSink:
    """Native journal protocol through systemd-python."""

    def __init__(self) -> None:
        # systemd-python, a C extension without type information; imported only when used.
        # (By name, so that type checkers run from the source tree, where `systemd/` holds
        # unit files, do not take that directory for the package.)
        self._send = importlib.import_module(JOURNAL_MODULE).send

    @log_wrapper
    def log(self, priority: Priority, message: str, **fields: str) -> None:
        where = caller(sys._getframe(1))
        code = ({} if where is None else
                {"CODE_FILE": where.file, "CODE_LINE": where.line, "CODE_FUNC": where.function})
        self._send(message, PRIORITY=str(int(priority)), SYSLOG_IDENTIFIER=IDENTIFIER,
                   **code, **fields)

    @log_wrapper
    def outcome(self, record: OutcomeRecord) -> None:
        self.log(record.priority, record.message, **record.fields())


class StderrSink:
    """`<N>message` lines on a binary stream (stderr when no journal is there)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def log(self, priority: Priority, message: str, **fields: str) -> None:
        if len(message) > MAX_STDERR_MESSAGE:
            message = message[: MAX_STDERR_MESSAGE - 3] + "..."
        # One record, one line: a newline inside a message would start a record without <N>.
        line = f"<{int(priority)}>{message}".replace("\n", " ") + "\n"
        try:
            self._stream.write(line.encode(errors="backslashreplace"))
            self._stream.flush()
        except OSError:
            pass  # a closed stderr must not take the daemon down

    def outcome(self, record: OutcomeRecord) -> None:
        self.log(record.priority, record.message)


def journal_available(root: Root) -> bool:
    """Is journald listening (its socket exists) and is systemd-python importable?

    systemd-python always talks to the host's socket, so a moved `Root` never has a journal.
    """
    if not root.is_host or not os.path.exists(JOURNAL_SOCKET):
        return False
    try:
        importlib.import_module(JOURNAL_MODULE)
    except ImportError:
        return False
    return True


def open_log(
    root: Root, target: LogTarget = LogTarget.AUTO, stream: BinaryIO | None = None
) -> LogSink:
    """The sink for `target`: `auto` picks the journal when `journal_available`, else stderr."""
    if target is LogTarget.JOURNAL or (target is LogTarget.AUTO and journal_available(root)):
        try:
            return JournalSink()
        except ImportError:
            pass
    return StderrSink(stream if stream is not None else sys.stderr.buffer)
