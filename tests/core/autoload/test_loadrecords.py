"""The record file's format and what a successor reads from it (`core.autoload.loadrecords`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kmodd.core.autoload.loadrecords import (
    History,
    Instance,
    Kind,
    Loaded,
    carried_lines,
    escape,
    line,
    parse,
    summarize,
    unescape,
)

BOOT = "0b6c2d0e-6f5e-4a57-9c1c-3bd1f0b6a001"
OTHER_BOOT = "9f0e8f49-0000-4000-8000-000000000000"


def history(*lines: bytes, boot: str = BOOT) -> History:
    records, problems = parse(b"".join(lines), "loads")
    assert problems == []
    return summarize(records, boot)


def test_a_killed_instance_leaves_its_inserts_without_done_and_no_stop() -> None:
    h = history(line(Kind.START, 10, BOOT, "100.5"),
                line(Kind.INSERT, 10, "libata", "/devices/pci0000:00/0000:00:1f.2"),
                line(Kind.DONE, 10, "libata", "0"),
                line(Kind.INSERT, 10, "ahci", "/devices/pci0000:00/0000:00:1f.2"))
    assert h.previous == Instance(10, 100.5, False)
    assert h.loaded == {
        "libata": Loaded("libata", 10, ("/devices/pci0000:00/0000:00:1f.2",), True),
        "ahci": Loaded("ahci", 10, ("/devices/pci0000:00/0000:00:1f.2",), False),
    }


def test_a_failed_insert_is_not_a_load_and_a_removal_ends_one() -> None:
    h = history(line(Kind.START, 10, BOOT, "1"),
                line(Kind.INSERT, 10, "bad", "-"), line(Kind.DONE, 10, "bad", "8"),
                line(Kind.INSERT, 10, "gone", "-"), line(Kind.DONE, 10, "gone", "0"),
                line(Kind.REMOVED, 10, "gone"), line(Kind.STOP, 10))
    assert h.loaded == {}
    assert h.previous == Instance(10, 1.0, True)


def test_carried_records_keep_the_earlier_instances_pid_and_devices() -> None:
    first = [line(Kind.START, 10, BOOT, "1"),
             line(Kind.INSERT, 10, "e1000", "/devices/a"), line(Kind.DONE, 10, "e1000", "0")]
    h1 = history(*first)
    fresh = carried_lines(20, BOOT, 2.0, h1.loaded.values(), {"/devices/x"})
    h2 = history(fresh)
    assert h2.previous == Instance(20, 2.0, False)
    assert h2.loaded == {"e1000": Loaded("e1000", 10, ("/devices/a",), True)}
    assert h2.unbound == frozenset({"/devices/x"})


def test_an_unbind_counts_until_the_device_is_bound_again() -> None:
    h = history(line(Kind.START, 10, BOOT, "1"),
                line(Kind.UNBOUND, 10, "/devices/a"), line(Kind.UNBOUND, 10, "/devices/b"),
                line(Kind.BOUND, 10, "/devices/b", "e1000"))
    assert h.unbound == frozenset({"/devices/a"})


def test_records_of_another_boot_count_for_nothing() -> None:
    h = history(line(Kind.START, 10, OTHER_BOOT, "1"),
                line(Kind.INSERT, 10, "ahci", "-"), line(Kind.DONE, 10, "ahci", "0"),
                line(Kind.START, 20, BOOT, "2"))
    assert (h.instances, dict(h.loaded)) == ((Instance(20, 2.0, False),), {})


def test_a_cut_short_last_line_and_garbage_are_reported_with_their_line_numbers() -> None:
    data = (line(Kind.START, 10, BOOT, "1") + b"insert\t10\tonly-three\n" + b"launch\t1\n"
            + b"done\tpid\tx\t0\n" + b"done\t10\tbad\\q\t0\n" + b"insert\t10\tahc")
    records, problems = parse(data, "/run/kmodd/loads")
    assert [r.kind for r in records] == [Kind.START]
    assert problems == [
        "/run/kmodd/loads:6: the last record was cut short, ignoring",
        "/run/kmodd/loads:2: a insert record needs 4 fields, it has 3, ignoring",
        "/run/kmodd/loads:3: unknown record kind 'launch', ignoring",
        "/run/kmodd/loads:4: the pid 'pid' is not a number, ignoring",
        "/run/kmodd/loads:5: a broken escape, ignoring",
    ]


def test_a_devpath_with_tabs_newlines_and_backslashes_survives_the_file() -> None:
    devpath = "/devices/odd\tname\nwith\\slash"
    (record,), problems = parse(line(Kind.UNBOUND, 1, devpath), "loads")
    assert (record.fields, problems) == ((devpath,), [])


@given(st.text())
def test_escaping_round_trips_any_text(text: str) -> None:
    assert unescape(escape(text)) == text
    assert "\t" not in escape(text) and "\n" not in escape(text)


@given(st.binary(max_size=300))
def test_any_bytes_parse_without_raising(data: bytes) -> None:
    records, problems = parse(data, "loads")
    summarize(records, BOOT, problems)
