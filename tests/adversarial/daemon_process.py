"""The whole daemon as a process on the simulated kernel, started as the unit starts it.

`tests/daemon/kmodd_on_fake_kernel.py` is `kmodd` with the simulated kernel; `Manager` plays
the service manager's side of sd_notify. `DaemonProcess` starts one on a test root, logging
to a file, and says what it left behind: its exit, its log lines, and the processes that
carry its tag (every process the daemon starts inherits its environment, so the install
commands it ran are found by the tag wherever they were reparented).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.daemon.daemon_tree import MACHINE_CONFIG, MACHINE_MODULES, write_sysfs, write_tree

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "tests/daemon/kmodd_on_fake_kernel.py"
#: The environment variable that marks a daemon's processes (see the module docstring).
TAG_VARIABLE = "KMODD_TEST_TAG"
#: Seconds a test waits for something that takes well under one.
PATIENCE = 30.0


class Manager:
    """The service manager's side of sd_notify."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30) -> dict[str, str]:
        """The next message with `key` (= `value`), remembering everything received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)
            if key in fields and (value is None or fields[key] == value):
                return fields
        raise AssertionError(f"no {key}={value} from the daemon; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def machine_root(base: Path, *, config: str = "",
                 modprobe: Mapping[str, str] | None = None) -> Path:
    """A test root with the machine's fixture modules and sysfs, `config` as kmodd.conf and
    `modprobe` (path -> text) added to modprobe.d."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    write_tree(base, MACHINE_MODULES, kver=os.uname().release,
               config={**MACHINE_CONFIG, **(modprobe or {})})
    write_sysfs(base)
    (base / "etc/kmodd.conf").write_text(config)
    return base


def tagged_processes(tag: str, exclude: Sequence[int] = ()) -> dict[int, str]:
    """Live processes whose environment carries `tag`: pid -> command name."""
    needle = f"{TAG_VARIABLE}={tag}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        state = stat[stat.rfind(b")") + 2:][:1]
        if needle in environ and state != b"Z":
            found[int(entry)] = stat[stat.find(b"(") + 1:stat.rfind(b")")].decode()
    return found


class DaemonProcess:
    """One daemon process on `base` (`--root`), its stderr in a file."""

    def __init__(self, base: Path, *args: str, notify: bool = True) -> None:
        self.base = base
        self.tag = uuid.uuid4().hex
        self.socket_path = str(base / "run/kmodd/io.kmodd")
        self.manager = Manager(base / f"notify-{self.tag}") if notify else None
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), TAG_VARIABLE: self.tag}
        if self.manager is not None:
            env["NOTIFY_SOCKET"] = str(base / f"notify-{self.tag}")
        self.log_path = base / f"stderr-{self.tag}"
        with open(self.log_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(WRAPPER), f"--root={base}", "--log-target=stderr", *args],
                env=env, stderr=stderr, stdin=subprocess.DEVNULL, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        assert self.manager is not None
        try:
            self.manager.wait_for("READY", "1", PATIENCE)
        except AssertionError:
            raise AssertionError(f"not ready; its log: {self.log()}") from None

    def wait_exit(self, timeout: float = PATIENCE) -> int | None:
        """Its exit code, or None if it still runs after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after `timeout`, seconds taken)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        return code, time.monotonic() - started

    def log(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def leftovers(self) -> dict[int, str]:
        """Processes it started that still run (itself excluded)."""
        return tagged_processes(self.tag, exclude=(self.pid,))

    def close(self) -> None:
        """Kill what is left of it and everything it started (a failed test's leftovers)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.leftovers():
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, signal.SIGKILL)
        if self.manager is not None:
            self.manager.close()
