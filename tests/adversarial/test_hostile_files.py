"""Hostile and unlucky files: the daemon and the front ends never wait on, or read without end,
a file that is not a regular one, and the inotify watch never logs a traceback.

Each test attacks the real code: the in-process daemon on the simulated kernel (reload with a
FIFO in modprobe.d, file churn under its inotify watch), the daemon as a process (a directory
at /etc/kmodd.conf), and `kmodctl modprobe` as a process (`-C /dev/zero`, `-C` a FIFO).
Where the code before this change would block for ever, the test releases the block (opens the
FIFO's write end) after a deadline, so it fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kmodd.system.inotify import ChangeWatcher, WatchTarget
from kmodd.system.root import Root
from tests.daemon.daemon_tree import (
    KVER,
    MACHINE_MODULES,
    ListSink,
    RunningDaemon,
    kmodctl,
    wait_until,
    write_tree,
)

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "tests/daemon/kmodd_on_fake_kernel.py"
#: Deadline for what must not hang (generous: each finishes in well under a second).
HANG_TIMEOUT = 15.0
#: Address space for a front end given /dev/zero: far more than it needs, far less than an
#: endless read would take, so an unbounded read fails fast instead of eating the machine.
FRONT_END_MEMORY = 1 << 30


@pytest.fixture
def root(tmp_path: Path) -> Root:
    return write_tree(tmp_path / "root", MACHINE_MODULES)


def release(fifo: Path) -> bool:
    """Open and close the FIFO's write end: an open() blocked on it returns (and reads EOF).
    True when someone was waiting on it (the open for writing succeeds only then)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: no reader
        return False
    return True


def run_releasing(fifo: Path, args: list[str]) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run a front end that is given a FIFO; after a deadline release whoever waits on it.
    The result, and whether it had to be released (it blocked)."""
    released: list[bool] = []
    timer = threading.Timer(HANG_TIMEOUT - 5, lambda: released.append(release(fifo)))
    timer.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kmodd.cli.kmodctl", *args], capture_output=True,
            text=True, timeout=HANG_TIMEOUT, cwd=REPO,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)})
    finally:
        timer.cancel()
        timer.join()
    return result, any(released)


def test_a_fifo_in_modprobe_d_is_skipped_with_a_warning_and_the_reload_completes(
        root: Root) -> None:
    sink = ListSink()
    fifo = Path(root.path("/etc/modprobe.d/zz-fifo.conf"))

    async def scenario() -> tuple[int, int]:
        running = RunningDaemon(root, sink=sink)
        async with running as daemon:
            os.mkfifo(fifo)
            Path(root.path("/etc/modprobe.d/late.conf")).write_text("blacklist kmodd_serial\n")
            daemon.request_reload()
            try:
                await wait_until(lambda: daemon.snapshots.current.generation == 2,
                                 timeout=HANG_TIMEOUT, what="the reload")
            finally:
                release(fifo)
            assert "kmodd_serial" in daemon.snapshots.current.config.blacklists
            code, _, _ = await asyncio.to_thread(kmodctl, running.socket_path, "status")
            return daemon.snapshots.current.generation, code

    assert asyncio.run(scenario()) == (2, 0)
    assert "/etc/modprobe.d/zz-fifo.conf: is a FIFO, ignoring" in sink.texts()


def test_inotify_churn_in_modprobe_d_logs_no_callback_error(tmp_path: Path) -> None:
    """Files created and deleted as fast as possible while the watch waits with short
    timeouts and is cancelled mid-wait: the loop's exception handler never fires."""
    errors: list[dict[str, Any]] = []

    async def scenario(directory: str) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        stop = threading.Event()

        def churn() -> None:
            i = 0
            while not stop.is_set():
                path = os.path.join(directory, f"c{i % 50}.conf")
                with open(path, "w") as f:
                    f.write("blacklist x\n")
                os.unlink(path)
                i += 1

        watcher = ChangeWatcher([WatchTarget(directory, suffix=".conf")], 0.0005, 0.002)
        writer = threading.Thread(target=churn)
        writer.start()
        changes = 0
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                wait = asyncio.ensure_future(watcher.wait_change())
                await asyncio.sleep(0.0007)
                wait.cancel()
                try:
                    await wait
                    changes += 1
                except asyncio.CancelledError:
                    pass
            await asyncio.sleep(0.05)  # callbacks already queued run now
        finally:
            stop.set()
            writer.join()
            watcher.close()
        return changes

    changes = asyncio.run(scenario(str(tmp_path)))
    assert changes > 0  # the watch did report the churn
    assert [str(e.get("exception") or e.get("message")) for e in errors] == []


def test_etc_kmodd_conf_being_a_directory_is_warned_about(tmp_path: Path) -> None:
    base = tmp_path / "root"
    write_tree(base, MACHINE_MODULES, kver=os.uname().release)
    (base / "etc/kmodd.conf").mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(HANG_TIMEOUT)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO),
           "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc = subprocess.Popen([sys.executable, str(WRAPPER), f"--root={base}",
                             "--log-target=stderr", "--no-coldplug", "--no-watch-config"],
                            env=env, stderr=subprocess.PIPE, cwd=REPO)
    try:
        while b"READY=1" not in notify.recv(65536):
            pass
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=HANG_TIMEOUT)
        notify.close()
    assert proc.returncode == 0
    assert "<4>/etc/kmodd.conf: is a directory, ignoring" in err.decode().splitlines()


def serial_ko(root: Root) -> str:
    return root.path(f"/lib/modules/{KVER}/kernel/drivers/kmodd/kmodd-serial.ko")


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (FRONT_END_MEMORY, FRONT_END_MEMORY))


def _modprobe(root: Root, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmodd.cli.kmodctl", "modprobe", "-d", root.prefix, "-S", KVER,
         *args], capture_output=True, text=True, timeout=HANG_TIMEOUT, cwd=REPO,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}, preexec_fn=_limit_memory)


def test_modprobe_with_config_dev_zero_says_so_and_goes_on(root: Root) -> None:
    result = _modprobe(root, "-C", "/dev/zero", "--show-depends", "kmodd_serial")
    assert (result.returncode, result.stderr) == (0, (
        "libkmod: ERROR ../libkmod/libkmod-config.c:942 kmod_config_new: "
        "/dev/zero: is a character device, ignoring\n"))
    assert result.stdout == f"insmod {serial_ko(root)} \n"


def test_modprobe_with_config_a_fifo_does_not_wait_for_a_writer(root: Root) -> None:
    fifo = Path(root.path("/etc/fifo.conf"))
    os.mkfifo(fifo)
    result, blocked = run_releasing(fifo, [
        "modprobe", "-d", root.prefix, "-S", KVER, "-C", str(fifo), "--show-depends",
        "kmodd_serial"])
    assert not blocked
    assert (result.returncode, result.stderr) == (0, (
        "libkmod: ERROR ../libkmod/libkmod-config.c:942 kmod_config_new: "
        f"{fifo}: is a FIFO, ignoring\n"))
    assert result.stdout == f"insmod {serial_ko(root)} \n"


def test_insmod_of_a_fifo_fails_at_once_instead_of_waiting_for_a_writer(
        tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.ko"
    os.mkfifo(fifo)
    result, blocked = run_releasing(fifo, ["insmod", str(fifo)])
    assert not blocked
    assert (result.returncode, result.stderr) == (
        1, f"insmod: ERROR: could not insert module {fifo}: Illegal seek\n")


def test_daemon_explain_of_a_fifo_path_answers_without_waiting_for_a_writer(
        root: Root) -> None:
    fifo = Path(root.path("/explain-me.ko"))
    os.mkfifo(fifo)

    async def scenario() -> tuple[int, str, bool]:
        running = RunningDaemon(root)
        async with running:
            released: list[bool] = []
            timer = threading.Timer(HANG_TIMEOUT - 5, lambda: released.append(release(fifo)))
            timer.start()
            try:
                code, out, _ = await asyncio.to_thread(
                    kmodctl, running.socket_path, "explain", "/explain-me.ko")
            finally:
                timer.cancel()
                timer.join()
            return code, out, any(released)

    code, out, blocked = asyncio.run(scenario())
    assert not blocked
    assert code == 1, out
    assert "the file is not a usable module: it is a FIFO" in out, out
