"""kmodd's trace instance against a fake tracefs: a directory shaped like the kernel's, with a
FIFO as the instance's trace_pipe; and the autoload policy file."""

from __future__ import annotations

import os
from pathlib import Path

from kmodd.system.root import Root
from kmodd.system.tracefs import find_tracefs, open_instance, write_policy

REQUEST = ("           mount-273     [000] .....    27.075084: module_request: fs-cramfs wait=1 "
           "call_site=get_fs_type\n")
LOAD = "        modprobe-274     [000] .....    27.100000: module_load: cramfs \n"


def fake_tracefs(root: Path, base: str = "sys/kernel/tracing") -> Path:
    """The instance as the kernel makes it on mkdir: events, trace_clock, trace_pipe."""
    instance = root / base / "instances/kmodd"
    for event in ("module_request", "module_load"):
        (instance / "events/module" / event).mkdir(parents=True)
        (instance / "events/module" / event / "enable").write_text("0\n")
    (instance / "trace_clock").write_text("[local] global counter uptime perf mono\n")
    os.mkfifo(instance / "trace_pipe")
    return instance


def test_no_tracefs_is_a_reason_not_an_error(tmp_path: Path) -> None:
    assert open_instance(Root(str(tmp_path))) == (
        "tracefs is not mounted (/sys/kernel/tracing or /sys/kernel/debug/tracing has no "
        "instances directory)")


def test_tracefs_under_debugfs_is_found(tmp_path: Path) -> None:
    fake_tracefs(tmp_path, "sys/kernel/debug/tracing")
    assert find_tracefs(Root(str(tmp_path))) == str(tmp_path / "sys/kernel/debug/tracing")


def test_the_instance_enables_both_events_on_the_monotonic_clock(tmp_path: Path) -> None:
    instance = fake_tracefs(tmp_path)
    opened = open_instance(Root(str(tmp_path)))
    assert not isinstance(opened, str)
    try:
        assert (instance / "events/module/module_request/enable").read_text() == "1"
        assert (instance / "events/module/module_load/enable").read_text() == "1"
        assert (instance / "trace_clock").read_text() == "mono"
        assert opened.problems == ()
    finally:
        opened.close()


def test_lines_are_read_without_blocking_and_whole(tmp_path: Path) -> None:
    instance = fake_tracefs(tmp_path)
    opened = open_instance(Root(str(tmp_path)))
    assert not isinstance(opened, str)
    writer = os.open(instance / "trace_pipe", os.O_WRONLY)
    try:
        assert opened.lines() == []  # nothing written: returns at once
        os.write(writer, (REQUEST + LOAD[:20]).encode())
        assert opened.lines() == [REQUEST.rstrip("\n")]
        os.write(writer, LOAD[20:].encode())
        assert opened.lines() == [LOAD.rstrip("\n")]
        assert not opened.ended
    finally:
        os.close(writer)
    assert opened.lines() == []
    assert opened.ended  # the FIFO's writer left
    opened.close()


def test_an_instance_whose_events_cannot_be_enabled_is_removed_with_the_reason(
        tmp_path: Path) -> None:
    tracing = tmp_path / "sys/kernel/tracing/instances"
    tracing.mkdir(parents=True)  # mkdir of an instance here makes a plain, empty directory
    opened = open_instance(Root(str(tmp_path)))
    assert opened == (f"cannot enable the module tracepoints in {tracing / 'kmodd'}: "
                      "No such file or directory")
    assert os.listdir(tracing) == []


def test_an_instance_made_by_the_unit_is_taken_over_and_left_to_it(tmp_path: Path) -> None:
    instance = fake_tracefs(tmp_path)
    (instance / "events/module/module_request/enable").write_text("1\n")
    opened = open_instance(Root(str(tmp_path)))
    assert not isinstance(opened, str)
    assert opened.made is False
    assert opened.close() is None  # not empty here, so not removed; not kmodd's to say
    assert instance.is_dir()


def test_the_policy_file_is_replaced_whole_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "run/modprobe.d/kmodd-autoload-policy.conf"
    assert write_policy(str(path), "install fs-cramfs /bin/false\n") is None
    assert path.read_text() == "install fs-cramfs /bin/false\n"
    assert write_policy(str(path), "install net-pf-33 /bin/false\n") is None
    assert path.read_text() == "install net-pf-33 /bin/false\n"
    assert sorted(os.listdir(path.parent)) == ["kmodd-autoload-policy.conf"]
    assert write_policy(str(path), None) is None
    assert not path.exists()
    assert write_policy(str(path), None) is None  # already gone
