"""system.safeopen: only regular files are read, within a cap, and opening never waits.

Each case that would hang on a naive open() (a FIFO without a writer) runs in a thread with a
deadline; if it ever blocks, the test opens the FIFO's write end to release it and fails.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kmodd.core.kmod.config import ConfigFile
from kmodd.system import safeopen
from kmodd.system.moddb import load_config
from kmodd.system.modfile import map_module
from kmodd.system.root import Root
from kmodd.system.safeopen import (
    CONFIG_FILE_MAX,
    READ_CHUNK,
    Refusal,
    Refused,
    map_regular,
    read_lines,
    read_regular,
)

T = TypeVar("T")
#: Generous: a read that does not block returns in microseconds.
HANG_TIMEOUT = 10.0


def within_deadline(fn: Callable[[], T], fifo: Path | None = None) -> T:
    """`fn()` in a thread; fail (after releasing a FIFO it may block on) if it does not return."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(HANG_TIMEOUT)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # lets the open() return
        thread.join(HANG_TIMEOUT)
        pytest.fail(f"blocked for more than {HANG_TIMEOUT} s")
    return result[0]


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.conf"
    path.write_bytes(b"blacklist pcspkr\n")
    assert read_regular(str(path), CONFIG_FILE_MAX) == b"blacklist pcspkr\n"


def test_a_file_of_exactly_the_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.conf"
    path.write_bytes(b"x" * 100)
    assert read_regular(str(path), 100) == b"x" * 100


def test_a_fifo_is_refused_at_once_without_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "f.conf"
    os.mkfifo(fifo)
    got = within_deadline(lambda: read_regular(str(fifo), CONFIG_FILE_MAX, "/etc/f.conf"), fifo)
    assert got == Refused("/etc/f.conf", Refusal.NOT_REGULAR, "is a FIFO")
    assert isinstance(got, Refused)
    assert got.text == "/etc/f.conf: is a FIFO, ignoring"


def test_dev_zero_is_refused_as_a_character_device() -> None:
    assert read_regular("/dev/zero", CONFIG_FILE_MAX) == Refused(
        "/dev/zero", Refusal.NOT_REGULAR, "is a character device")


def test_a_symlink_to_dev_zero_is_refused_for_what_it_opens(tmp_path: Path) -> None:
    link = tmp_path / "z.conf"
    link.symlink_to("/dev/zero")
    assert read_regular(str(link), CONFIG_FILE_MAX) == Refused(
        str(link), Refusal.NOT_REGULAR, "is a character device")


def test_a_symlink_to_dev_null_reads_empty_as_kmods_mask(tmp_path: Path) -> None:
    link = tmp_path / "masked.conf"
    link.symlink_to("/dev/null")
    assert read_regular(str(link), CONFIG_FILE_MAX) == b""


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert read_regular(str(tmp_path), CONFIG_FILE_MAX, "/etc/kmodd.conf") == Refused(
        "/etc/kmodd.conf", Refusal.NOT_REGULAR, "is a directory")


def test_a_socket_is_refused_as_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.conf"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        got = read_regular(str(path), CONFIG_FILE_MAX)
    assert isinstance(got, Refused)
    assert (got.refusal, got.reason) == (Refusal.NOT_REGULAR, "is a socket")


def test_a_missing_file_is_an_open_failure_marked_missing(tmp_path: Path) -> None:
    got = read_regular(str(tmp_path / "none.conf"), CONFIG_FILE_MAX)
    assert isinstance(got, Refused)
    assert (got.refusal, got.reason, got.missing) == (
        Refusal.OPEN_FAILED, "No such file or directory", True)


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.conf"
    path.write_bytes(b"x" * 101)
    assert read_regular(str(path), 100) == Refused(
        str(path), Refusal.TOO_LARGE, "is larger than 100 bytes")


def test_a_file_that_grows_past_the_cap_while_read_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "growing.conf"
    path.write_bytes(b"x" * 10)
    checked = safeopen._check

    def check_then_grow(fd: int, shown: str, cap: int) -> object:
        result = checked(fd, shown, cap)  # 10 bytes: within the cap of 100
        with path.open("ab") as f:
            f.write(b"y" * 1000)  # the file grows after fstat, before the read
        return result

    monkeypatch.setattr(safeopen, "_check", check_then_grow)
    assert read_regular(str(path), 100) == Refused(
        str(path), Refusal.TOO_LARGE, "is larger than 100 bytes")


def test_a_proc_file_of_size_zero_is_read_up_to_the_cap() -> None:
    status = read_regular("/proc/self/status", CONFIG_FILE_MAX)
    assert isinstance(status, bytes)
    assert status.startswith(b"Name:")
    assert read_regular("/proc/self/status", 16) == Refused(
        "/proc/self/status", Refusal.TOO_LARGE, "is larger than 16 bytes")


def test_mapping_refuses_a_fifo_and_maps_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "f.ko"
    os.mkfifo(fifo)
    assert within_deadline(lambda: map_regular(str(fifo), 1 << 20), fifo) == Refused(
        str(fifo), Refusal.NOT_REGULAR, "is a FIFO")
    module = tmp_path / "m.ko"
    module.write_bytes(b"\x7fELF" + b"\0" * 60)
    mapped = map_regular(str(module), 1 << 20)
    assert not isinstance(mapped, Refused)
    assert bytes(mapped[:4]) == b"\x7fELF"
    empty = tmp_path / "empty.ko"
    empty.write_bytes(b"")
    assert map_regular(str(empty), 1 << 20) == b""


def test_a_module_fifo_is_an_errno_for_modinfo_not_a_wait(tmp_path: Path) -> None:
    fifo = tmp_path / "f.ko"
    os.mkfifo(fifo)
    assert within_deadline(lambda: map_module(str(fifo)), fifo) == errno.ENODEV


# -- the modprobe.d reader uses it -------------------------------------------------------------


def test_modprobe_d_skips_a_fifo_and_a_device_with_a_diagnostic_and_reads_the_rest(
        tmp_path: Path) -> None:
    conf = tmp_path / "etc/modprobe.d"
    conf.mkdir(parents=True)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("quiet\n")
    os.mkfifo(conf / "b-fifo.conf")
    (conf / "c-zero.conf").symlink_to("/dev/zero")
    (conf / "a.conf").write_text("blacklist pcspkr\n")
    (conf / "d.conf").write_text("blacklist floppy\n")
    moddir = "/lib/modules/6.1.0-test"
    config = within_deadline(lambda: load_config(Root(str(tmp_path)), moddir),
                             conf / "b-fifo.conf")
    assert config.blacklists == ("pcspkr", "floppy")
    assert config.files == ("/etc/modprobe.d/a.conf", "/etc/modprobe.d/d.conf")
    assert [(d.site, d.message) for d in config.diagnostics] == [
        ("config_not_read", "/etc/modprobe.d/b-fifo.conf: is a FIFO, ignoring"),
        ("config_not_read", "/etc/modprobe.d/c-zero.conf: is a character device, ignoring"),
    ]


def test_a_dev_null_link_in_etc_still_masks_the_same_name_in_lib(tmp_path: Path) -> None:
    (tmp_path / "etc/modprobe.d").mkdir(parents=True)
    (tmp_path / "lib/modprobe.d").mkdir(parents=True)
    (tmp_path / "lib/modprobe.d/x.conf").write_text("blacklist pcspkr\n")
    (tmp_path / "etc/modprobe.d/x.conf").symlink_to("/dev/null")
    config = load_config(Root(str(tmp_path)), "/lib/modules/6.1.0-test")
    assert (config.blacklists, config.diagnostics) == ((), ())
    assert ConfigFile("x.conf", "/etc/modprobe.d/x.conf").path in config.files


def test_lines_are_read_a_chunk_at_a_time_and_whole_across_chunk_boundaries(
        tmp_path: Path) -> None:
    path = tmp_path / "kallsyms"
    lines = [f"ffffffff{i:08x} T symbol_{i}" for i in range(READ_CHUNK // 8)]
    path.write_text("\n".join(lines) + "\n")
    got = read_lines(str(path), 1 << 30)
    assert not isinstance(got, Refused)
    assert list(got) == lines


def test_lines_stop_at_the_cap_and_a_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("one\ntwo\nthree")
    got = read_lines(str(path), 1 << 20)
    assert not isinstance(got, Refused) and list(got) == ["one", "two", "three"]
    capped = read_lines(str(path), 6)  # a file that grows; /proc files say size 0
    assert isinstance(capped, Refused)  # over the cap by its size already


def test_lines_of_a_fifo_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = within_deadline(lambda: read_lines(str(fifo), 1 << 20, "/proc/kallsyms"), fifo)
    assert got == Refused("/proc/kallsyms", Refusal.NOT_REGULAR, "is a FIFO")


def test_lines_of_a_proc_file_of_size_zero_are_read() -> None:
    got = read_lines("/proc/self/status", 1 << 20)
    assert not isinstance(got, Refused)
    assert next(iter(got)).startswith("Name:")
