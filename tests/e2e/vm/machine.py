"""One QEMU/TCG guest: its command line, boot, the agent on ttyS1, and QMP.

    from tests.e2e.vm.machine import VM
    from tests.e2e.vm import devices
    with VM(devices=devices.usbhost()) as vm:
        print(vm.boot_info, vm.sh("uname -r").out)
        vm.qmp("device_add", driver="e1000", id="n1", bus="pci.0", addr="0x10")

Two boot modes (`init=`): `Init.AGENT` (the default) runs the agent as the guest's only
process next to PID 1's shell: nothing else runs unless a test starts it. `Init.SYSTEMD`
boots the image's systemd as PID 1, as an installed system would (kmodd's units enabled,
udev's module-loading rules hidden as the package's diversions hide them), with the agent
as an early service on the same ttyS1:

    with VM(init=Init.SYSTEMD) as vm:
        vm.wait_system_running()
        print(vm.sh("systemctl show kmodd.service -p ActiveState").out)

The agent socket is created with wait=on: QEMU waits for this process to connect before it
starts the guest (and before it opens the QMP socket), so no guest output is lost.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from tests.e2e.vm import devices as devsets
from tests.e2e.vm import image
from tests.e2e.vm.qmp import QMP

QEMU = os.environ.get("KMODD_E2E_QEMU", "qemu-system-x86_64")
RUN_ROOT = os.environ.get("KMODD_E2E_RUN", "/tmp/kmodd-e2e")  # short: unix socket paths
KERNEL_APPEND = "console=ttyS0 panic=-1 quiet"
# guest/init reads this kernel parameter: `systemd` makes it exec systemd as PID 1.
INIT_PARAMETER = "kmodd_e2e.init"
SYSTEM_RUNNING_TIMEOUT = 300.0
BOOT_TIMEOUT = 180.0
SHUTDOWN_TIMEOUT = 30.0
_counter = itertools.count()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the QEMU child: get SIGKILL when the test process dies (no orphaned guests)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

Uevent = dict[str, Any]


class GuestError(RuntimeError):
    """The guest did not boot, the agent failed a request, or a command failed."""


class Init(StrEnum):
    """What runs as the guest's PID 1."""

    AGENT = "agent"      # guest/init: mounts, then the agent; no service manager, no udevd
    SYSTEMD = "systemd"  # /lib/systemd/systemd with the image's units; the agent is a service


@dataclass(frozen=True, slots=True)
class ShResult:
    rc: int | None
    out: str
    err: str
    dt: float  # seconds the command ran in the guest
    t0: float  # guest monotonic time it started


class AgentClient:
    """Host side of the ttyS1 JSON-lines protocol (see guest/agent.py)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._file = sock.makefile("rb")
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        # (host monotonic arrival, kind, payload) of every unsolicited message
        self.unsolicited: list[tuple[float, str, dict[str, Any]]] = []
        self.closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for line in self._file:
                t = time.monotonic()
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue  # noise on the line before the agent started
                if "id" in msg and msg["id"] is not None:
                    with self._lock:
                        waiter = self._pending.pop(msg["id"], None)
                    if waiter is not None:
                        waiter[1].append(msg)
                        waiter[0].set()
                    continue
                kind = next(iter(msg))
                with self._cond:
                    self.unsolicited.append((t, kind, msg[kind]))
                    self._cond.notify_all()
        except OSError:
            pass
        self.closed = True
        with self._cond:
            self._cond.notify_all()
        with self._lock:
            for ev, _ in self._pending.values():
                ev.set()

    def call(self, op: str, reply_timeout: float = 120, **args: Any) -> dict[str, Any]:
        """Send one request (args go to the guest verbatim); wait for its reply."""
        timeout = reply_timeout
        rid = next(self._ids)
        done = threading.Event()
        box: list[dict[str, Any]] = []
        with self._lock:
            self._pending[rid] = (done, box)
        self.sock.sendall(json.dumps({"id": rid, "op": op, **args}).encode() + b"\n")
        if not done.wait(timeout) or not box:
            with self._lock:
                self._pending.pop(rid, None)
            raise GuestError(f"agent: no reply to {op} within {timeout} s"
                             + (" (connection closed)" if self.closed else ""))
        reply = box[0]
        if not reply.get("ok"):
            raise GuestError(f"agent: {op} failed: {reply.get('error')}")
        return reply

    def wait_for(self, kind: str, pred: Callable[[dict[str, Any]], bool] = lambda _: True,
                 timeout: float = 30, since: float = 0.0) -> tuple[float, dict[str, Any]] | None:
        """First unsolicited `kind` message arriving at/after `since` that satisfies pred."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, k, payload in self.unsolicited:
                    if t >= since and k == kind and pred(payload):
                        return t, payload
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self._cond.wait(left)

    def messages(self, kind: str, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        with self._cond:
            return [(t, p) for t, k, p in self.unsolicited if k == kind and t >= since]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class VM:
    """A booted guest (a context manager: boots on enter, powers off on exit)."""

    def __init__(self, devices: devsets.DeviceSet | None = None, *,
                 guest: image.Guest | None = None, cpu: str = "max", memory: int = 2048,
                 smp: int = 1, name: str = "vm", append: str = "",
                 boot_timeout: float = BOOT_TIMEOUT, keep_rundir: bool = True,
                 init: Init = Init.AGENT) -> None:
        self.devices = devices or devsets.none()
        self.guest = guest
        self.init = Init(init)
        self.cpu, self.memory, self.smp = cpu, memory, smp
        self.name = name
        self.append = append
        self.boot_timeout = boot_timeout
        self.keep_rundir = keep_rundir
        self.rundir = os.path.join(RUN_ROOT, f"{name}-{os.getpid()}-{next(_counter)}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.agent: AgentClient | None = None
        self.qmp_client: QMP | None = None
        self.boot_info: dict[str, Any] = {}
        self._t0 = 0.0  # host monotonic time QEMU was started

    # --- lifecycle --------------------------------------------------------------------------
    def argv(self) -> list[str]:
        assert self.guest is not None
        r = self.rundir
        return [
            QEMU, "-accel", "tcg", "-machine", "pc", "-cpu", self.cpu,
            "-m", str(self.memory), "-smp", str(self.smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", self.guest.base.vmlinux, "-initrd", self.guest.initrd,
            "-append", self.kernel_command_line(),
            "-chardev", f"file,id=con,path={r}/console.log", "-serial", "chardev:con",
            "-chardev", f"socket,id=agent,path={r}/agent.sock,server=on,wait=on",
            "-serial", "chardev:agent",
            "-qmp", f"unix:{r}/qmp.sock,server=on,wait=off",
            "-vga", "std",
            *self.devices.argv(r),
        ]

    def kernel_command_line(self) -> str:
        """The fixed parameters, the boot mode (systemd only: the default needs none), extras."""
        mode = f"{INIT_PARAMETER}={self.init}" if self.init is Init.SYSTEMD else ""
        return " ".join(p for p in (KERNEL_APPEND, mode, self.append) if p)

    def start(self) -> VM:
        if self.guest is None:
            self.guest = image.build()
        # The initrd cache keeps the few most recently used: another run on this machine
        # (another checkout) may have evicted this one since the guest was built. This makes
        # it again if so, and marks it used. An initrd of its own (image.with_state: a reboot
        # that keeps the root file system) is not the cache's and is booted as it is.
        if self.guest.initrd == image.initrd_path(self.guest.base, self.guest.overlay):
            self.guest = replace(self.guest,
                                 initrd=image.initrd(self.guest.base, self.guest.overlay))
        shutil.rmtree(self.rundir, ignore_errors=True)
        os.makedirs(self.rundir)
        argv = self.argv()
        with open(os.path.join(self.rundir, "cmdline.txt"), "w") as f:
            f.write(shlex.join(argv) + "\n")
        t0 = time.monotonic()
        with open(os.path.join(self.rundir, "qemu.log"), "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            self.agent = AgentClient(self._connect(os.path.join(self.rundir, "agent.sock")))
            self.qmp_client = QMP(self._connect(os.path.join(self.rundir, "qmp.sock"),
                                                path_only=True))
            hello = self.agent.wait_for("hello", timeout=self.boot_timeout)
            if hello is None:
                raise GuestError(f"no hello from the agent within {self.boot_timeout} s")
        except BaseException as e:
            self._kill()
            raise GuestError(f"boot failed: {e}\n{self.diagnostics()}") from e
        t_hello, info = hello
        self.boot_info = {**info, "host_seconds": round(t_hello - t0, 2),
                          "qemu": self.qmp_client.version, "devices": self.devices.name,
                          "init": str(self.init)}
        self._t0 = t0
        return self

    def _connect(self, path: str, path_only: bool = False) -> Any:
        deadline = time.monotonic() + 30
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise GuestError(f"qemu exited with {self.proc.returncode}")
            if os.path.exists(path):
                if path_only:
                    return path
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(path)
                    return s
                except OSError:
                    s.close()
            if time.monotonic() > deadline:
                raise GuestError(f"{path} did not appear")
            time.sleep(0.02)

    def diagnostics(self) -> str:
        """Tail of the console and QEMU's own output, for failure messages."""
        out = []
        for name in ("qemu.log", "console.log"):
            try:
                with open(os.path.join(self.rundir, name), errors="replace") as f:
                    out.append(f"--- {name} (tail) ---\n" + "".join(f.readlines()[-40:]))
            except OSError:
                pass
        return "\n".join(out)

    def console(self) -> str:
        with open(os.path.join(self.rundir, "console.log"), errors="replace") as f:
            return f.read()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        """Power the guest off (kill QEMU if it does not stop in time)."""
        if self.proc is None:
            return
        if self.agent is not None and self.proc.poll() is None and not self.agent.closed:
            with contextlib.suppress(GuestError):
                self.agent.call("poweroff", reply_timeout=5)
        try:
            self.proc.wait(SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
        for c in (self.agent, self.qmp_client):
            if c is not None:
                c.close()
        if not self.keep_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- guest operations -------------------------------------------------------------------
    def call(self, op: str, reply_timeout: float = 130, **args: Any) -> dict[str, Any]:
        """One agent request; `args` (a guest-side `timeout` among them) go to the guest."""
        assert self.agent is not None, "VM not started"
        return self.agent.call(op, reply_timeout=reply_timeout, **args)

    def sh(self, cmd: str, timeout: float = 120, check: bool = True,
           env: dict[str, str] | None = None) -> ShResult:
        """Run a shell command in the guest; with check, a non-zero exit raises GuestError."""
        r = self.call("sh", reply_timeout=timeout + 10, cmd=cmd, timeout=timeout, env=env or {})
        res = ShResult(r["rc"], r["out"], r["err"], r["dt"], r.get("t0", 0.0))
        if check and res.rc != 0:
            raise GuestError(f"guest command failed (rc={res.rc}): {cmd}\n"
                             f"stdout:\n{res.out[-3000:]}\nstderr:\n{res.err[-3000:]}")
        return res

    def put(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.call("put", path=path, data=base64.b64encode(raw).decode(), mode=mode)

    def get(self, path: str) -> bytes:
        return base64.b64decode(self.call("get", path=path)["data"])

    def wait_path(self, paths: list[str], timeout: float = 30,
                  gone: bool = False) -> dict[str, float]:
        """Wait until each path exists (gone=True: does not); guest time of each change."""
        r = self.call("wait_path", reply_timeout=timeout + 10, paths=paths, timeout=timeout,
                      gone=gone)
        r2: dict[str, float] = r["times"]
        return r2

    def spawn(self, argv: list[str], env: dict[str, str] | None = None, notify: bool = False,
              name: str = "proc") -> dict[str, Any]:
        return self.call("spawn", argv=argv, env=env or {}, notify=notify, name=name)

    def wait_system_running(self, timeout: float = SYSTEM_RUNNING_TIMEOUT) -> str:
        """systemd mode: wait until the boot transaction is done; the system state it reached.

        "running" or "degraded" (a unit failed: `systemctl --failed` says which); the host
        seconds from starting QEMU to that moment go into boot_info["system_running_seconds"].
        """
        if self.init is not Init.SYSTEMD:
            raise GuestError("wait_system_running needs a guest booted with init=Init.SYSTEMD")
        r = self.sh("systemctl is-system-running --wait", timeout=timeout, check=False)
        state = r.out.strip()
        if state not in ("running", "degraded"):
            raise GuestError(f"systemd did not finish booting: state {state!r} (rc={r.rc})\n"
                             + self.sh("systemctl --failed --no-pager", check=False).out)
        self.boot_info["system_running_seconds"] = round(time.monotonic() - self._t0, 2)
        self.boot_info["system_state"] = state
        return state

    def start_journald(self, timeout: float = 60) -> None:
        """Run systemd-journald standalone (no systemd as PID 1), as a service would see it."""
        self.sh("mkdir -p /run/systemd/journal /var/log/journal")
        self.spawn(["/lib/systemd/systemd-journald"], name="journald")
        if not self.wait_path(["/run/systemd/journal/socket"], timeout=timeout):
            raise GuestError("systemd-journald did not create its socket")

    def qmp(self, command: str, **arguments: Any) -> Any:
        assert self.qmp_client is not None, "VM not started"
        return self.qmp_client.execute(command, **arguments)

    def loaded_modules(self) -> set[str]:
        return {line.split()[0] for line in self.sh("cat /proc/modules").out.splitlines()
                if line.strip()}

    def wait_modules_settled(self, quiet: float = 3.0, timeout: float = 300.0) -> set[str]:
        """The live modules, once none went live or away for `quiet` s (any loader's)."""
        r = self.call("wait_modules_settled", reply_timeout=timeout + 30, quiet=quiet,
                      timeout=timeout)
        if not r["settled"]:
            raise GuestError(f"modules still changing {timeout} s later")
        return set(r["modules"])

    # --- uevents ----------------------------------------------------------------------------
    def uevents_start(self, stream: bool = True) -> float:
        """Start the guest's kernel-uevent listener; returns the host time it was running."""
        self.call("uevents_start", stream=stream)
        return time.monotonic()

    def uevents(self, since: float = 0.0) -> list[tuple[float, Uevent]]:
        """Streamed uevents (host arrival time, event) that arrived at/after `since`."""
        assert self.agent is not None
        return self.agent.messages("uevent", since)

    def wait_uevent(self, pred: Callable[[Uevent], bool], timeout: float = 30,
                    since: float = 0.0) -> tuple[float, Uevent] | None:
        assert self.agent is not None
        return self.agent.wait_for("uevent", pred, timeout, since)
