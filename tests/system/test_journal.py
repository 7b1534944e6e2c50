"""system.journal: records in a real, private systemd-journald; `<N>` lines without one."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kmodd.core.autoload.messages import MESSAGE_IDS, Message
from kmodd.system.journal import (
    LogSink,
    LogTarget,
    OutcomeRecord,
    Priority,
    StderrSink,
    log_wrapper,
    open_log,
)
from kmodd.system.root import Root

JOURNALD = "/lib/systemd/systemd-journald"
WORKTREE = str(Path(__file__).resolve().parents[2])

FULL = OutcomeRecord(
    message="Inserted module 'virtio_net' for pci:v00001AF4d00001041",
    priority=Priority.INFO,
    outcome="inserted",
    message_id=MESSAGE_IDS[Message.INSERTED],
    module="virtio_net",
    modalias="pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00",
    devpath="/devices/pci0000:00/0000:00:03.0",
    seqnum=823,
    errno=None,
    duration_usec=1532,
)
FAILED = OutcomeRecord(
    message="Failed to insert module 'foo': No such device",
    priority=Priority.ERR,
    outcome="failed",
    message_id=MESSAGE_IDS[Message.FAILED_NO_DEVICE],
    module="foo",
    errno=19,
    duration_usec=7,
)

FIELDS = ",".join((
    "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "KMODD_MODULE", "KMODD_MODALIAS", "KMODD_DEVPATH",
    "KMODD_SEQNUM", "ERRNO", "KMODD_OUTCOME", "KMODD_DURATION_USEC", "KMODD_SETTING",
    "MESSAGE_ID", "CODE_FILE", "CODE_LINE", "CODE_FUNC",
))

@log_wrapper
def relay(sink: LogSink, priority: Priority, message: str, **fields: str) -> None:
    """A wrapper like the daemon's reporter: records name its caller, not it."""
    sink.log(priority, message, **fields)


def tell(sink: LogSink) -> None:
    """Logs from known lines (TELL_LINE + 1, + 2, + 3): the records' CODE_LINE."""
    sink.outcome(FULL)
    sink.outcome(FAILED)
    relay(sink, Priority.WARNING, "bad value, ignoring",
          MESSAGE_ID=MESSAGE_IDS[Message.CONFIG_IGNORED], KMODD_SETTING="intake_queue")


TELL_LINE = tell.__code__.co_firstlineno + 1  # its docstring's line

# Runs inside `unshare -m`: private /run and /var/log, a standalone journald, our records,
# then every kmodd record back as JSON on stdout.
SCENARIO = textwrap.dedent(f"""
    set -eu
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /var/log
    mkdir -p /run/systemd/journal /run/log/journal
    {JOURNALD} </dev/null >/dev/null 2>&1 &
    JPID=$!
    trap 'kill $JPID' EXIT
    for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
    PYTHONPATH={WORKTREE} {sys.executable} -c "$1"
    for i in $(seq 100); do
        n=$(journalctl -D /run/log/journal -o json SYSLOG_IDENTIFIER=kmodd | wc -l)
        [ "$n" -ge 3 ] && break
        sleep 0.05
    done
    journalctl -D /run/log/journal -o json --output-fields={FIELDS} SYSLOG_IDENTIFIER=kmodd
""")

@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(JOURNALD, os.X_OK) or not shutil.which("unshare"),
    reason="needs root, unshare and systemd-journald",
)
def test_outcome_records_reach_a_real_journald_with_every_field_exact() -> None:
    sender = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.system.test_journal import FAILED, FULL, tell
        from kmodd.system.journal import JournalSink, open_log
        from kmodd.system.root import Root
        sink = open_log(Root())
        assert isinstance(sink, JournalSink), sink
        tell(sink)
    """)
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", SCENARIO, "sh", sender],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for record in records:
        for volatile in ("__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_BOOT_ID"):
            record.pop(volatile, None)
    here = str(Path(__file__).resolve())
    assert records == [
        {
            "MESSAGE": FULL.message,
            "MESSAGE_ID": MESSAGE_IDS[Message.INSERTED],
            "CODE_FILE": here, "CODE_LINE": str(TELL_LINE + 1), "CODE_FUNC": "tell",
            "PRIORITY": "6",
            "SYSLOG_IDENTIFIER": "kmodd",
            "KMODD_MODULE": "virtio_net",
            "KMODD_MODALIAS": "pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00",
            "KMODD_DEVPATH": "/devices/pci0000:00/0000:00:03.0",
            "KMODD_SEQNUM": "823",
            "KMODD_OUTCOME": "inserted",
            "KMODD_DURATION_USEC": "1532",
        },
        {
            "MESSAGE": FAILED.message,
            "MESSAGE_ID": MESSAGE_IDS[Message.FAILED_NO_DEVICE],
            "CODE_FILE": here, "CODE_LINE": str(TELL_LINE + 2), "CODE_FUNC": "tell",
            "PRIORITY": "3",
            "SYSLOG_IDENTIFIER": "kmodd",
            "KMODD_MODULE": "foo",
            "ERRNO": "19",
            "KMODD_OUTCOME": "failed",
            "KMODD_DURATION_USEC": "7",
        },
        {
            "MESSAGE": "bad value, ignoring",
            "MESSAGE_ID": MESSAGE_IDS[Message.CONFIG_IGNORED],
            "CODE_FILE": here, "CODE_LINE": str(TELL_LINE + 3), "CODE_FUNC": "tell",
            "PRIORITY": "4",
            "SYSLOG_IDENTIFIER": "kmodd",
            "KMODD_SETTING": "intake_queue",
        },
    ]


def test_without_a_journal_records_are_priority_prefixed_stderr_lines(tmp_path: Path) -> None:
    stream = io.BytesIO()
    sink = open_log(Root(str(tmp_path)), stream=stream)
    assert isinstance(sink, StderrSink)
    sink.outcome(FULL)
    sink.outcome(FAILED)
    sink.log(Priority.DEBUG, "two\nlines")
    assert stream.getvalue() == (
        b"<6>Inserted module 'virtio_net' for pci:v00001AF4d00001041\n"
        b"<3>Failed to insert module 'foo': No such device\n"
        b"<7>two lines\n"
    )


def test_the_stderr_target_is_used_when_asked_even_with_a_journal() -> None:
    stream = io.BytesIO()
    assert isinstance(open_log(Root(), LogTarget.STDERR, stream), StderrSink)


def test_record_fields_leave_out_what_is_unknown() -> None:
    assert FAILED.fields() == {
        "MESSAGE_ID": MESSAGE_IDS[Message.FAILED_NO_DEVICE],
        "KMODD_MODULE": "foo", "ERRNO": "19", "KMODD_OUTCOME": "failed",
        "KMODD_DURATION_USEC": "7",
    }
