"""system.notify: sd_notify datagrams to a real socket, watchdog and socket-activation variables."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmodd.system.notify import ListenFd, Notifier, listen_fds, watchdog_interval


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_state_changes_arrive_as_key_value_lines(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("Coldplug: 29 devices")
    assert sock.recv(4096) == b"READY=1\nSTATUS=Coldplug: 29 devices\n"
    assert notifier.status("Loaded 3 modules")
    assert sock.recv(4096) == b"STATUS=Loaded 3 modules\n"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1\n"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1\n"
    notifier.close()


def test_reloading_carries_the_monotonic_clock(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    before = time.monotonic_ns() // 1000
    assert Notifier({"NOTIFY_SOCKET": path}).reloading()
    message = sock.recv(4096).decode()
    after = time.monotonic_ns() // 1000
    m = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)\n", message)
    assert m is not None
    assert before <= int(m.group(1)) <= after


def test_an_abstract_socket_address_is_reached() -> None:
    name = f"kmodd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1\n"
    finally:
        sock.close()


def test_without_a_manager_notifications_are_quiet_no_ops(tmp_path: Path) -> None:
    assert Notifier({}).ready() is False
    assert Notifier({"NOTIFY_SOCKET": "relative"}).enabled is False
    # A socket path where nobody listens any more must not raise either.
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready() is False


def test_the_watchdog_period_is_half_the_timeout_for_our_pid_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def _dup_if_open(fd: int) -> int | None:
    try:
        return os.dup(fd)
    except OSError:
        return None


def test_passed_sockets_are_found_with_their_names() -> None:
    a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    saved = {fd: _dup_if_open(fd) for fd in (3, 4)}
    try:
        os.dup2(a.fileno(), 3)
        os.dup2(b.fileno(), 4)
        environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2",
                   "LISTEN_FDNAMES": "control:kernel"}
        fds = listen_fds(environ)
        assert fds == (ListenFd(3, "control"), ListenFd(4, "kernel"))
        with socket.socket(fileno=os.dup(3)) as passed:
            assert passed.type == socket.SOCK_STREAM
        assert os.get_inheritable(3) is False
        unnamed = listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
        assert unnamed == (ListenFd(3, "unknown"),)
        assert listen_fds({**environ, "LISTEN_PID": "1"}, pid=2) == ()
        closed = os.open(os.devnull, os.O_RDONLY)
        os.close(closed)  # a descriptor number that is certainly not open now
        too_many = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": str(closed - 2)}
        assert ListenFd(closed, "unknown") not in listen_fds(too_many)
        assert listen_fds({}) == ()
    finally:
        for fd, copy in saved.items():
            if copy is None:
                os.close(fd)
            else:
                os.dup2(copy, fd)
                os.close(copy)
        a.close()
        b.close()


def test_a_stale_socket_at_the_control_path_is_replaced(tmp_path: Path) -> None:
    from kmodd.system.notify import bind_control

    path = str(tmp_path / "io.kmodd")
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(path)  # bound, never listening, closed: what a crashed daemon leaves
    gone.close()
    bound = bind_control(path)
    try:
        info = os.lstat(path)
        assert (info.st_dev, info.st_ino) == (bound.device, bound.inode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)  # the new one listens
    finally:
        bound.sock.close()


def test_a_socket_someone_listens_on_is_not_taken_over(tmp_path: Path) -> None:
    from kmodd.system.notify import PathTaken, bind_control

    path = str(tmp_path / "io.kmodd")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as theirs:
        theirs.bind(path)
        theirs.listen(1)
        with pytest.raises(PathTaken, match=f"another process listens on {re.escape(path)}; "
                                            "not removing it"):
            bind_control(path)
        assert os.path.exists(path)


def test_the_daemon_removes_only_the_socket_file_it_made(tmp_path: Path) -> None:
    from kmodd.system.notify import bind_control, unlink_if_ours

    path = str(tmp_path / "io.kmodd")
    bound = bind_control(path)
    bound.sock.close()
    os.unlink(path)
    Path(path).write_text("someone else's\n")
    assert not unlink_if_ours(bound)
    assert Path(path).read_text() == "someone else's\n"
    os.unlink(path)
    again = bind_control(path)
    again.sock.close()
    assert unlink_if_ours(again) and not os.path.exists(path)
