"""The whole daemon as a process: started like the unit starts it, driven with `kmodctl`.

`kmodd_on_fake_kernel.py` is `kmodd` (kmodd.daemon.main) with the simulated kernel. The test
plays the service manager: it listens on `$NOTIFY_SOCKET` for READY=1, STATUS=, WATCHDOG=1,
RELOADING=1 and STOPPING=1, sends SIGHUP and SIGTERM, and talks to the control socket as
root and as `nobody`. The daemon reads its settings from the test root's /etc/kmodd.conf and
/proc/cmdline, coldplugs the root's fake sysfs, and logs to stderr.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kmodd
from kmodd.cli.client import EXIT_PERMISSION
from tests.adversarial.daemon_process import Manager
from tests.daemon.daemon_tree import FAKE_DEVICES, MACHINE_MODULES, kmodctl, write_sysfs, write_tree
from tests.runas import RunAs

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WRAPPER = HERE / "kmodd_on_fake_kernel.py"
CONFIG = "parallel_loads = 2\nintake_queue = lots\nlog_level = info\n"
CMDLINE = "quiet kmodd.log_level=debug kmodd.bogus=1"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kmodd-process-"))
    path.chmod(0o755)
    write_tree(path, MACHINE_MODULES, kver=os.uname().release, cmdline=CMDLINE)
    write_sysfs(path)
    (path / "etc/kmodd.conf").write_text(CONFIG)
    yield path
    shutil.rmtree(path)


def _coldplug_done(socket_path: str) -> bool:
    code, out, _ = kmodctl(socket_path, "--json", "status")
    return code == 0 and json.loads(out)["status"]["coldplug_done"]


def test_kmodd_runs_coldplugs_answers_reloads_and_stops_as_a_service(
        base: Path, as_nobody: RunAs) -> None:
    manager = Manager(base / "notify")
    socket_path = str(base / "run/kmodd/io.kmodd")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO),
           "NOTIFY_SOCKET": str(base / "notify"), "WATCHDOG_USEC": "400000"}
    stderr = open(base / "stderr", "wb")  # noqa: SIM115 - closed below, read after exit
    proc = subprocess.Popen([sys.executable, str(WRAPPER), f"--root={base}",
                             "--log-target=stderr"], env=env, stderr=stderr, cwd=REPO)
    try:
        ready = manager.wait_for("READY", "1")
        assert ready["STATUS"].endswith("generation 1 (mapped), coldplug running")
        deadline = time.monotonic() + 30
        while not _coldplug_done(socket_path):
            assert time.monotonic() < deadline, "coldplug did not finish"
            time.sleep(0.05)
        manager.wait_for("WATCHDOG", "1")

        code, out, _ = kmodctl(socket_path, "devices")
        assert code == 0
        rows = {line.split()[0]: line.split()[3] for line in out.splitlines()[1:]}
        # The PCI function and its virtio device are loaded side by side: whichever chain
        # comes second finds the shared modules inserted by the other (or waits for them).
        pci = rows.pop("/devices/pci0000:00/0000:00:03.0")
        assert pci in ("inserted", "already-loaded")
        assert rows == {
            "/devices/pci0000:00/0000:00:03.0/virtio2": "inserted",
            "/devices/platform/pcspkr": "blacklisted",
            "/devices/platform/serial8250": "inserted",
            "/devices/platform/kmodd-nodriver": "not-found",
        }
        assert set(rows) | {"/devices/pci0000:00/0000:00:03.0"} == set(FAKE_DEVICES)
        code, out, _ = kmodctl(socket_path, "blame")
        assert code == 0
        assert sorted(line.split()[1] for line in out.splitlines()) == sorted([
            "kmodd_core", "kmodd_virtio_pci", "kmodd_net_failover", "kmodd_virtio_net",
            "kmodd_serial"])

        def unprivileged() -> str:
            return json.dumps([kmodctl(socket_path, "status")[0],
                               kmodctl(socket_path, "load", "kmodd_pcspkr")[0]])

        assert json.loads(as_nobody(unprivileged)) == [0, EXIT_PERMISSION]
        code, out, _ = kmodctl(socket_path, "load", "kmodd_pcspkr")
        assert (code, out.splitlines()[0]) == (0, "kmodd_pcspkr: inserted: "
                                                  "Inserted module 'kmodd_pcspkr'")

        proc.send_signal(signal.SIGHUP)
        manager.wait_for("RELOADING", "1")
        manager.wait_for("READY", "1")
        code, out, _ = kmodctl(socket_path, "--json", "status")
        assert json.loads(out)["status"]["index_generation"] == 2

        proc.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING", "1")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
        manager.sock.close()
    log = (base / "stderr").read_text().splitlines()
    assert "<4>/etc/kmodd.conf:2: invalid value 'lots' for intake_queue: expected a whole " \
           "number, ignoring" in log
    assert "<4>kernel command line: unknown setting 'bogus', ignoring" in log
    # The kernel command line wins over the config file: debug records are written.
    assert "<7>Module 'kmodd_pcspkr' is deny-listed (by kmod) [/devices/platform/pcspkr]" in log
    assert any(line.startswith("<6>Ready after ") for line in log)
    assert any(line.startswith("<6>Coldplug done: ") for line in log)
    assert log[-1] == "<6>Stopping"
    assert not os.path.exists(socket_path)  # the daemon removes the socket it bound


def test_kmodd_help_and_version_need_no_system(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    version = subprocess.run([sys.executable, "-m", "kmodd.daemon.main", "--version"],
                             capture_output=True, text=True, env=env, cwd=REPO)
    assert (version.returncode, version.stdout) == (0, f"kmodd {kmodd.__version__}\n")
    usage = subprocess.run([sys.executable, "-m", "kmodd.daemon.main", "--help"],
                           capture_output=True, text=True, env=env, cwd=REPO)
    assert usage.returncode == 0
    assert usage.stdout.startswith("usage: kmodd [--config FILE] [--root DIR] [--NAME=VALUE")


def test_kmodd_without_an_index_still_starts_and_says_why(tmp_path: Path) -> None:
    base = tmp_path / "root"
    (base / "proc").mkdir(parents=True)
    (base / "proc/cmdline").write_text("\n")
    manager = Manager(tmp_path / "notify")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO),
           "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc = subprocess.Popen([sys.executable, str(WRAPPER), f"--root={base}",
                             "--log-target=stderr", "--no-coldplug"],
                            env=env, stderr=subprocess.PIPE, cwd=REPO)
    try:
        manager.wait_for("READY", "1")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        manager.sock.close()
    assert proc.returncode == 0
    release = os.uname().release
    assert (f"<3>Cannot read the module index: /lib/modules/{release}/modules.dep.bin: "
            "No such file or directory; no module is loaded until a reload succeeds") \
        in err.decode().splitlines()


ACTIVATE = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.dup2(int(sys.argv[2]), 4)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="triggers a real uevent")
def test_kmodd_takes_both_sockets_from_the_service_manager(base: Path) -> None:
    from kmodd.system.netlink import KERNEL_GROUP, NETLINK_KOBJECT_UEVENT
    from kmodd.system.notify import bind_listener

    # What kmodd.socket and kmodd-kernel.socket hand over: fds 3 and 4, named.
    control_path = str(base / "activated.sock")
    control = bind_listener(control_path)
    kernel = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    kernel.bind((0, KERNEL_GROUP))
    manager = Manager(base / "notify")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "LISTEN_FDS": "2",
           "LISTEN_FDNAMES": "control:kernel", "NOTIFY_SOCKET": str(base / "notify")}

    # A launcher puts the sockets at fds 3 and 4 and execs the daemon, so LISTEN_PID (its
    # own pid) names the daemon's process, as systemd does. (Copies above 4 first, so that
    # putting one in place cannot overwrite the other.)
    fds = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 10) for s in (control, kernel)]
    proc = subprocess.Popen(
        [sys.executable, "-c", ACTIVATE, str(fds[0]), str(fds[1]), str(WRAPPER),
         f"--root={base}", "--log-target=stderr", "--no-coldplug"],
        env=env, pass_fds=fds, stderr=subprocess.PIPE, cwd=REPO)
    for fd in fds:
        os.close(fd)
    control.close()
    kernel.close()
    try:
        try:
            manager.wait_for("READY", "1")
        except AssertionError:
            proc.kill()
            raise AssertionError(proc.communicate()[1].decode()) from None
        assert not (base / "run/kmodd/io.kmodd").exists()  # it bound nothing of its own
        with open("/sys/devices/platform/serial8250/uevent", "w") as f:
            f.write("add")
        deadline = time.monotonic() + 30
        while True:
            code, out, _ = kmodctl(control_path, "devices", "/devices/platform/serial8250")
            if code == 0 and "inserted" in out:
                break
            assert time.monotonic() < deadline, out
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        manager.sock.close()
    assert os.path.exists(control_path)  # the service manager's socket: not ours to remove
