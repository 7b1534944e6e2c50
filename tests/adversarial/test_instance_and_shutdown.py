"""One daemon per root, the control socket's path kept, and a stop that always ends in time.

The real daemon runs as a process on the simulated kernel (`daemon_process`). Attacks: a
second daemon for the same root; a regular file, directory, symbolic link or FIFO where the
control socket goes; someone else's socket at the path when the daemon stops; SIGTERM while
an `install` command from modprobe.d hangs, started by a uevent and by `kmodctl load`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kmodd.core.exitcodes import EXIT_ALREADY_RUNNING, EXIT_FAILURE
from tests.adversarial.daemon_process import PATIENCE, DaemonProcess, machine_root
from tests.daemon.daemon_tree import kmodctl

#: The stop deadline the shutdown tests give the daemon (the `stop_timeout` setting).
STOP_TIMEOUT = 1.0
#: What a stop may take beyond it: the commands' SIGTERM grace, the threads' end, exit.
STOP_SLACK = 5.0
#: An install command that hangs: the shell stays (`; true`), `sleep` runs below it.
HANGING = "/bin/sleep 60; true"
#: One that ignores SIGTERM (the shell and, inheriting the disposition, `sleep`).
STUBBORN = "trap '' TERM; /bin/sleep 60; true"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kmodd-instance-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(root: Path, *args: str, notify: bool = True) -> DaemonProcess:
        daemon = DaemonProcess(root, *args, notify=notify)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def _identity(path: str) -> tuple[int, int]:
    info = os.lstat(path)
    return info.st_dev, info.st_ino


def test_a_second_daemon_for_the_same_root_exits_with_its_own_code_and_leaves_the_first_alone(
        base: Path, daemons: Callable[..., DaemonProcess]) -> None:
    root = machine_root(base)
    first = daemons(root, "--no-coldplug")
    first.wait_ready()
    before = _identity(first.socket_path)

    second = daemons(root, "--no-coldplug", notify=False)
    assert second.wait_exit() == EXIT_ALREADY_RUNNING
    assert second.log() == [
        f"<3>Cannot start: another kmodd (pid {first.pid}) is running for root {root}; it "
        f"holds {root}/run/kmodd/kmodd.lock. Stop it first (systemctl stop kmodd.service), "
        "or give this one another --root"]
    assert _identity(first.socket_path) == before
    code, out, _ = kmodctl(first.socket_path, "--json", "status")
    assert (code, json.loads(out)["status"]["pid"]) == (0, first.pid)
    assert first.terminate(PATIENCE)[0] == 0


def _regular_file(path: Path) -> None:
    path.write_text("precious\n")


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("precious\n")


def _symlink(path: Path) -> None:
    (path.parent / "target").write_text("precious\n")
    path.symlink_to(path.parent / "target")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _kept(path: Path) -> str:
    if path.is_symlink():
        return f"symlink to {os.readlink(path)}: {path.read_text()}"
    if path.is_dir():
        return f"directory: {(path / 'inside').read_text()}"
    if path.is_fifo():
        return "fifo"
    return f"file: {path.read_text()}"


@pytest.mark.parametrize(("make", "kind", "kept"), [
    (_regular_file, "regular file", "file: precious\n"),
    (_directory, "directory", "directory: precious\n"),
    (_symlink, "symbolic link", "symlink to {dir}/target: precious\n"),
    (_fifo, "FIFO", "fifo"),
], ids=["regular-file", "directory", "symlink", "fifo"])
def test_anything_but_a_socket_at_the_socket_path_is_refused_and_kept(
        base: Path, daemons: Callable[..., DaemonProcess], make: Callable[[Path], None],
        kind: str, kept: str) -> None:
    root = machine_root(base)
    path = root / "run/kmodd/io.kmodd"
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)

    daemon = daemons(root, "--no-coldplug", notify=False)
    assert daemon.wait_exit() == EXIT_FAILURE
    assert daemon.log()[-1] == (f"<3>Cannot start: cannot listen on {path}: {path} exists and "
                                f"is a {kind}, not a socket; not removing it")
    assert _kept(path) == kept.format(dir=path.parent)


def test_stopping_a_daemon_leaves_a_socket_it_did_not_create(
        base: Path, daemons: Callable[..., DaemonProcess]) -> None:
    root = machine_root(base)
    daemon = daemons(root, "--no-coldplug")
    daemon.wait_ready()
    # Someone replaces the daemon's socket file with a socket of their own.
    os.unlink(daemon.socket_path)
    theirs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        theirs.bind(daemon.socket_path)
        theirs.listen(1)
        identity = _identity(daemon.socket_path)
        assert daemon.terminate(PATIENCE)[0] == 0
        assert _identity(daemon.socket_path) == identity
    finally:
        theirs.close()


def _wait_for_sleep(daemon: DaemonProcess) -> dict[int, str]:
    deadline = time.monotonic() + PATIENCE
    while "sleep" not in (running := daemon.leftovers()).values():
        assert daemon.proc.poll() is None, daemon.log()
        assert time.monotonic() < deadline, f"the install command never ran: {daemon.log()}"
        time.sleep(0.02)
    return running


def _assert_stopped_in_time_and_killed(daemon: DaemonProcess, module: str,
                                       command: str = HANGING, how: str = "SIGTERM") -> None:
    running = _wait_for_sleep(daemon)
    shell = min(pid for pid, name in running.items() if name == "sh")
    code, took = daemon.terminate(STOP_TIMEOUT + STOP_SLACK)
    assert code == 0, f"still running {took:.1f} s after SIGTERM: {daemon.log()}"
    killed = [line for line in daemon.log() if line.startswith("<4>Stopping: killed")]
    assert len(killed) == 1, daemon.log()
    assert killed[0].startswith(
        f"<4>Stopping: killed install command for {module} (pid {shell} and its process "
        f"group, {how}): '{command}' was still running after ")
    assert killed[0].endswith(f" s (stop_timeout {STOP_TIMEOUT:g} s)")
    assert daemon.leftovers() == {}


@pytest.mark.parametrize(("command", "how"), [(HANGING, "SIGTERM"), (STUBBORN, "SIGKILL")],
                         ids=["hanging", "ignoring-sigterm"])
def test_sigterm_during_an_install_command_from_a_uevent_kills_it_and_stops_in_time(
        base: Path, daemons: Callable[..., DaemonProcess], command: str, how: str) -> None:
    # Coldplug finds the serial port; its module's install command hangs.
    root = machine_root(base, config="stop_timeout = 1s\ninstall_timeout = 120s\n",
                        modprobe={"etc/modprobe.d/hang.conf": f"install kmodd_serial {command}\n"})
    daemon = daemons(root)
    daemon.wait_ready()
    _assert_stopped_in_time_and_killed(daemon, "kmodd_serial", command, how)


def test_sigterm_during_an_install_command_from_kmodctl_load_kills_it_and_stops_in_time(
        base: Path, daemons: Callable[..., DaemonProcess]) -> None:
    root = machine_root(base, config="stop_timeout = 1s\ninstall_timeout = 120s\n",
                        modprobe={"etc/modprobe.d/hang.conf": f"install kmodd_pcspkr {HANGING}\n"})
    daemon = daemons(root, "--no-coldplug")
    daemon.wait_ready()
    answers: list[tuple[int, str, str]] = []
    client = threading.Thread(
        target=lambda: answers.append(kmodctl(daemon.socket_path, "load", "kmodd_pcspkr")),
        daemon=True)
    client.start()
    _assert_stopped_in_time_and_killed(daemon, "kmodd_pcspkr")
    client.join(PATIENCE)
    assert len(answers) == 1 and answers[0][0] != 0  # the client is not left hanging
