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

from kmodd.system.journal import (
    LogTarget,
    OutcomeRecord,
    Priority,
    StderrSink,
    open_log,
)
from kmodd.system.root import Root

JOURNALD = "/lib/systemd/systemd-journald"
WORKTREE = str(Path(__file__).resolve().parents[2])

FULL = OutcomeRecord(
    message="Inserted module 'virtio_net' for pci:v00001AF4d00001041",
    priority=Priority.INFO,
    outcome="inserted",
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
    module="foo",
    errno=19,
    duration_usec=7,
)

FIELDS = ",".join((
    "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "KMODD_MODULE", "KMODD_MODALIAS", "KMODD_DEVPATH",
    "KMODD_SEQNUM", "ERRNO", "KMODD_OUTCOME", "KMODD_DURATION_USEC", "KMODD_SETTING",
))

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
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_journal import FULL, FAILED
        from kmodd.system.journal import JournalSink, Priority, open_log
        from kmodd.system.root import Root
        sink = open_log(Root())
        assert isinstance(sink, JournalSink), sink
        sink.outcome(FULL)
        sink.outcome(FAILED)
        sink.log(Priority.WARNING, "bad value, ignoring", KMODD_SETTING="intake_queue")
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
    assert records == [
        {
            "MESSAGE": FULL.message,
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
            "PRIORITY": "3",
            "SYSLOG_IDENTIFIER": "kmodd",
            "KMODD_MODULE": "foo",
            "ERRNO": "19",
            "KMODD_OUTCOME": "failed",
            "KMODD_DURATION_USEC": "7",
        },
        {
            "MESSAGE": "bad value, ignoring",
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
        "KMODD_MODULE": "foo", "ERRNO": "19", "KMODD_OUTCOME": "failed",
        "KMODD_DURATION_USEC": "7",
    }
